from roomee.kit.migrations import run_env
from roomee.hotel.models import metadata

run_env(metadata)
