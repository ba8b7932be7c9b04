from roomee.kit.migrations import run_env
from roomee.auth.models import metadata

run_env(metadata)
