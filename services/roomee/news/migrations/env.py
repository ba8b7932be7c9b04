from roomee.kit.migrations import run_env
from roomee.news.models import metadata

run_env(metadata)
