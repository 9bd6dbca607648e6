"""Parses a classic Prometheus text exposition (format 0.0.4, stdin) with
prometheus_client's parser; prints
{family: {"type": t, "help": h, "samples": [[name, labels, value], ...]}}.
A sample whose family has no matching # TYPE line comes out as its own
"untyped" family without help, which is what promtool reports."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    if fam.name in out:
        raise SystemExit(f"family {fam.name} appears twice")
    out[fam.name] = {
        "type": fam.type,
        "help": fam.documentation,
        "samples": [[s.name, s.labels, s.value] for s in fam.samples],
    }
print(json.dumps(out))
