"""Two versions side by side: what changed, a trial that splits new cases, adoption, and a migration."""

import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

from sopflow.engine import Engine

definitions = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("definitions")
folder = Path(tempfile.mkdtemp())
# The next version of content-review: the same process under a new title and `version:`.
text = (definitions / "content-review.yaml").read_text(encoding="utf-8")
old_version = int(re.search(r"^version: (\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
new_version = old_version + 1
revised = text.replace(f"\nversion: {old_version}\n", f"\nversion: {new_version}\n")
revised = revised.replace("en: Content Review", "en: Content Review, revised")
(folder / "content-review-next.yaml").write_text(revised, encoding="utf-8")

with Engine(f"sqlite:///{folder / 'cases.db'}") as sop:
    sop.deploy([definitions])
    old = [
        sop.start("content-review", {"title": f"旧稿{n}", "origin": "original"}, actor="li.na")
        for n in range(3)
    ]
    sop.deploy([folder / "content-review-next.yaml"])
    print([change.words for change in sop.diff("content-review", old_version, new_version).changes])

    # A trial: the operations manager (above the first step's owner) splits new cases 50/50.
    sop.trial_start("content-review", {old_version: 50, new_version: 50}, actor="chen.jing")
    started = [
        sop.start(
            "content-review", {"title": f"稿件{n}", "origin": "original"}, actor="li.na", key=f"draft-{n}"
        )
        for n in range(20)
    ]
    print("split:", sorted(Counter(r.case.definition_version for r in started).items()))
    print("trial:", [(f.version, f.started) for f in sop.trial_status("content-review").versions])

    # Adopt the new version, then move the cases still on the old one (a dry run first).
    sop.adopt("content-review", new_version, actor="chen.jing")
    dry = sop.migrate("content-review", old_version, new_version, actor="chen.jing", dry_run=True)
    print("dry run:", [(c.case_id, c.outcome, c.reason) for c in dry.cases][:2])
    done = sop.migrate("content-review", old_version, new_version, actor="chen.jing")
    print(f"moved {done.moved}, skipped {done.skipped}, failed {done.failed}")
    print(sop.history(old[0].case.id)[-1].reason)
    print("verified:", sop.verify().ok)
