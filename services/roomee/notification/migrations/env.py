from roomee.kit.migrations import run_env
from roomee.notification.models import metadata

run_env(metadata)
