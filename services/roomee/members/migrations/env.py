from roomee.kit.migrations import run_env
from roomee.members.models import metadata

run_env(metadata)
