"""Tenant workflow code: upload API, validation, content-hash versions, storage, cache."""

from __future__ import annotations

from loader._admission import UploadLimits
from loader._api import WorkflowApi
from loader._checks import Validator
from loader._loader import Loader, check_workflow_name, content_version
from loader._upload import Upload

__all__ = [
    "Loader",
    "Upload",
    "UploadLimits",
    "Validator",
    "WorkflowApi",
    "check_workflow_name",
    "content_version",
]
