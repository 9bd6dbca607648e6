"""Validates an OpenAPI document (stdin, JSON) with openapi-spec-validator."""
import json
import sys

from openapi_spec_validator import validate

validate(json.load(sys.stdin))
print("valid")
