"""Tenant workflow code: upload API, validation, content-hash versions, storage, cache."""

from __future__ import annotations

from loader._api import WorkflowApi
from loader._loader import Loader, Validator, check_workflow_name, content_version
from loader._upload import Upload

__all__ = [
    "Loader",
    "Upload",
    "Validator",
    "WorkflowApi",
    "check_workflow_name",
    "content_version",
]
