"""The layout rules of ARCHITECTURE §2: services share only roomee.kit, never each other's modules."""

from __future__ import annotations

import ast
from pathlib import Path

from roomee import targets

SOURCE = Path(__file__).resolve().parents[1] / "services" / "roomee"
NOT_SERVICES = {"kit"}
# Every package folder under services/roomee but the kit is a service, registered or not.
SERVICE_PACKAGES = {
    path.parent.name for path in SOURCE.glob("*/__init__.py") if path.parent.name not in NOT_SERVICES
}


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_service_imports_another_service():
    violations = []
    for service in SERVICE_PACKAGES:
        for path in (SOURCE / service).rglob("*.py"):
            for module in _imported_modules(path):
                parts = module.split(".")
                if parts[0] == "roomee" and len(parts) > 1 and parts[1] in SERVICE_PACKAGES and parts[1] != service:
                    violations.append(f"{path.relative_to(SOURCE)} imports {module}")
    assert violations == []


def test_kit_imports_no_service():
    violations = [
        f"{path.relative_to(SOURCE)} imports {module}"
        for path in (SOURCE / "kit").rglob("*.py")
        for module in _imported_modules(path)
        if module.split(".")[:2][-1] in SERVICE_PACKAGES and module.startswith("roomee.")
    ]
    assert violations == []


SHAPE = ("endpoints.py", "service.py", "repository.py", "schemas.py", "models.py", "events.py", "migrations/env.py")


def _shape_problems(folder: Path) -> list[str]:
    problems = [f"{folder.name} lacks {part}" for part in SHAPE if not (folder / part).exists()]
    if not [p for p in (folder / "migrations" / "versions").glob("*.py") if p.name != "__init__.py"]:
        problems.append(f"{folder.name} has no migration")
    return problems


def test_every_service_folder_is_a_registered_target_with_the_service_shape():
    registered = {spec.package.rsplit(".", 1)[1] for spec in targets.TARGETS.values() if spec.runner is None}
    assert SERVICE_PACKAGES == registered, "service folders and registered targets differ"
    problems = [problem for service in sorted(SERVICE_PACKAGES) for problem in _shape_problems(SOURCE / service)]
    assert problems == []


def test_the_shape_check_catches_a_half_built_service(tmp_path):
    folder = tmp_path / "reviews"
    (folder / "migrations" / "versions").mkdir(parents=True)
    for part in ("endpoints.py", "service.py", "models.py", "migrations/env.py", "migrations/versions/__init__.py"):
        (folder / part).write_text("")
    assert _shape_problems(folder) == [
        "reviews lacks repository.py", "reviews lacks schemas.py", "reviews lacks events.py", "reviews has no migration",
    ]


def test_detector_catches_a_cross_service_import(tmp_path):
    sample = tmp_path / "bad.py"
    sample.write_text("from roomee.members.service import MembersService\nimport roomee.auth.models\n")
    assert {"roomee.members.service", "roomee.auth.models"} <= _imported_modules(sample)
