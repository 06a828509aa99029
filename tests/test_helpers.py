"""The test suite's own rules: a test that cannot run here says why, and fails under CI."""

from __future__ import annotations

import pytest

from tests.helpers import require_capability


@pytest.mark.parametrize("ci", ["", "false"])
def test_a_missing_capability_skips_locally_naming_what_is_missing(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="this machine lacks a tmpfs mount"):
        require_capability(False, "a tmpfs mount")
    require_capability(True, "a tmpfs mount")  # present: nothing happens


@pytest.mark.parametrize("ci", ["true", "TRUE"])
def test_under_ci_a_missing_capability_fails_instead_of_skipping(monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="CI=true and this machine lacks "
                       r"`unshare -n` \(.ci/run provides it\)"):
        require_capability(False, "`unshare -n`")
    require_capability(True, "`unshare -n`")
