"""etc/prometheus/megaingest.rules.yml: checked and unit-tested by promtool.

`promtool check rules` and `promtool test rules` (Debian's prometheus
package) run on the shipped files. Then each alert's expression is replaced,
in a copy, by one that never fires and by one that always fires: the unit
tests must fail both times, which proves every alert has a case where it
fires and a case where it must not. The README's alert table must name every
alert. Skipped, saying so, only when promtool is not installed.
"""

import os
import re
import shutil
import subprocess

import pytest
import yaml

from helpers import SRCDIR

PROMTOOL = shutil.which("promtool")
RULES_DIR = os.path.join(SRCDIR, "etc", "prometheus")
RULES = os.path.join(RULES_DIR, "megaingest.rules.yml")
UNIT = os.path.join(RULES_DIR, "megaingest.rules.test.yml")
# What the README's "What to alert on" promises, as alert names.
EXPECTED = {"MegaingestDown", "MegaingestPostgresAway", "MegaingestWriterStalled",
            "MegaingestWriterHolding", "MegaingestNotCommitting", "MegaingestQueueFilling",
            "MegaingestSlowCommits", "MegaingestRejections", "MegaingestDeadLetters",
            "MegaingestSpoolGrowing", "MegaingestDatabaseFlapping",
            "MegaingestHandshakeFailures", "MegaingestDeadLetterFull"}

pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus; "
    "./dev.sh installs it)")


def promtool(*args, cwd=None):
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def alerts(path=RULES):
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_rules_pass_promtool_check():
    r = promtool("check", "rules", RULES)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in r.stdout


def test_rules_unit_tests_pass():
    r = promtool("test", "rules", UNIT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_promised_alert_is_there_and_in_the_readme():
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names))
    assert set(names) == EXPECTED
    for a in alerts():
        assert a["labels"]["severity"] in ("page", "ticket"), a["alert"]
        assert a["annotations"]["summary"] and a["annotations"]["description"]
    with open(os.path.join(SRCDIR, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    for name in names:
        assert f"`{name}`" in readme, f"README does not mention {name}"


@pytest.mark.parametrize("mutation,expr", [("never fires", "vector(0) > 1"),
                                           ("always fires", "vector(1)")])
def test_each_alert_has_a_firing_and_a_quiet_case(tmp_path, mutation, expr):
    with open(RULES, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    with open(UNIT, encoding="utf-8") as f:
        unit = f.read()
    (tmp_path / "megaingest.rules.test.yml").write_text(unit)
    untested = []
    for name in sorted(EXPECTED):
        for group in doc["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == name:
                    saved, rule["expr"] = rule["expr"], expr
        (tmp_path / "megaingest.rules.yml").write_text(yaml.safe_dump(doc))
        r = promtool("test", "rules", "megaingest.rules.test.yml", cwd=tmp_path)
        if r.returncode == 0:
            untested.append(name)
        else:
            assert re.search(rf"alertname: {name}\b", r.stdout + r.stderr), r.stdout
        for group in doc["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == name:
                    rule["expr"] = saved
    assert untested == [], f"the unit tests still pass when these {mutation}: {untested}"
