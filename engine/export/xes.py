"""XES (IEEE 1849-2016), the event log format process-mining tools read: each case a trace, each accepted
step an event with `concept:name` (the event), `time:timestamp`, `org:resource` (who took it; a token when
desensitised), `org:role` and `lifecycle:transition` (`complete`: a record is a step done). Refused
attempts are not steps of the process and are left out, and so are the records about a case that are
not its steps (deadline breaches, escalations, reassignments, control records: `Views.is_activity`);
CSV and JSON Lines carry them. sopflow's own
attributes use the prefix `sopflow:`: the states a step left and entered, the definition of a trace."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, BinaryIO
from xml.sax.saxutils import quoteattr

HEADER = """<?xml version="1.0" encoding="UTF-8"?>
<log xes.version="1849-2016" xes.features="" xmlns="http://www.xes-standard.org/">
  <extension name="Concept" prefix="concept" uri="http://www.xes-standard.org/concept.xesext"/>
  <extension name="Time" prefix="time" uri="http://www.xes-standard.org/time.xesext"/>
  <extension name="Organizational" prefix="org" uri="http://www.xes-standard.org/org.xesext"/>
  <extension name="Lifecycle" prefix="lifecycle" uri="http://www.xes-standard.org/lifecycle.xesext"/>
  <global scope="trace">
    <string key="concept:name" value="__INVALID__"/>
  </global>
  <global scope="event">
    <string key="concept:name" value="__INVALID__"/>
    <date key="time:timestamp" value="1970-01-01T00:00:00.000+00:00"/>
    <string key="lifecycle:transition" value="complete"/>
  </global>
  <classifier name="Activity" keys="concept:name"/>
  <classifier name="Activity and lifecycle" keys="concept:name lifecycle:transition"/>
  <string key="concept:name" value="sopflow"/>
"""


def _string(key: str, value: Any) -> str:
    return f"<string key={quoteattr(key)} value={quoteattr(str(value))}/>"


def timestamp(at: str) -> str:
    """An audit time (ISO 8601 with microseconds and a Z) as xs:dateTime with milliseconds and +00:00."""
    day, _, rest = at.partition("T")
    clock = rest.rstrip("Z")
    whole, _, fraction = clock.partition(".")
    return f"{day}T{whole}.{(fraction + '000')[:3]}+00:00"


class XesWriter:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def _write(self, text: str) -> None:
        self._out.write(text.encode("utf-8"))

    def begin(self, meta: Mapping[str, Any]) -> None:
        self._write(HEADER)
        if meta.get("desensitised"):
            self._write(f"  {_string('sopflow:privacy_key_id', meta.get('key_id'))}\n")

    def case(self, case: Mapping[str, Any], events: list[dict[str, Any]]) -> None:
        parts = [
            "  <trace>\n",
            f"    {_string('concept:name', case['case'])}\n",
            f"    {_string('sopflow:definition', case['definition'])}\n",
            f'    <int key="sopflow:version" value="{int(case["version"])}"/>\n',
            f"    {_string('sopflow:state', case['state'])}\n",
        ]
        for e in events:
            if e["outcome"] != "accepted":
                continue
            parts.append("    <event>\n")
            parts.append(f"      {_string('concept:name', e['event'])}\n")
            parts.append(f'      <date key="time:timestamp" value="{timestamp(e["at"])}"/>\n')
            parts.append(f"      {_string('org:resource', e['actor'])}\n")
            if e["role"]:
                parts.append(f"      {_string('org:role', e['role'])}\n")
            parts.append(f"      {_string('lifecycle:transition', 'complete')}\n")
            if e["from_state"]:
                parts.append(f"      {_string('sopflow:from', e['from_state'])}\n")
            if e["to_state"]:
                parts.append(f"      {_string('sopflow:to', e['to_state'])}\n")
            parts.append("    </event>\n")
        parts.append("  </trace>\n")
        self._write("".join(parts))

    def end(self) -> None:
        self._write("</log>\n")
        self._out.flush()
