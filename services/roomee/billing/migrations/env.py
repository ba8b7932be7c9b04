from roomee.billing.models import metadata
from roomee.kit.migrations import run_env

run_env(metadata)
