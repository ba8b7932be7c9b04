from roomee.kit.migrations import run_env
from roomee.media.models import metadata

run_env(metadata)
