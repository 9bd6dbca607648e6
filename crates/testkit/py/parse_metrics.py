"""Parses an OpenMetrics exposition (stdin) with prometheus_client's strict
parser; prints {family: {"type": t, "help": h, "samples": [[name, labels, value], ...]}}."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out[fam.name] = {"type": fam.type, "help": fam.documentation, "samples": [[s.name, s.labels, s.value] for s in fam.samples]}
print(json.dumps(out))
