"""The Roomee operator (``roomee run --target operator``): kopf handlers reconciling ``Hotel`` and
``Workspace`` custom resources (group ``roomee.io``, see ``crds/``) into tenants.

It is thin on purpose: the hotel service owns the provisioning saga and the members service owns
workspaces; the operator calls their HTTP APIs with its own service token (scopes
``hotel:provision`` and ``members:workspaces``), mirrors the saga's steps into conditions, and
de-provisions through a finalizer. One module per resource and verb under ``handlers/``.
"""
