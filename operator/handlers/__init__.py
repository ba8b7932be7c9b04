"""kopf handlers, one module per resource and verb (importing this package registers them all)."""

from roomee.operator.handlers import (  # noqa: F401  (registration happens at import)
    hotel_create,
    hotel_delete,
    hotel_drift,
    hotel_index,
    hotel_update,
    startup,
    workspace_create,
    workspace_delete,
    workspace_update,
)
