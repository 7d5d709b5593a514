"""A Hypothesis state machine: the keystore against a dict model (security.md §7 T16).

Rules: set (several providers and names, the generic ``secret`` namespace), delete,
replace, mark verified, rotate the data key, reopen (a new ``Keystore`` object, as
another process would), and bad input that must change nothing. After every step the
keystore equals the model: same labels, same values, same metadata.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from jupyter_byok.errors import InvalidSecretError, KeystoreError
from jupyter_byok.keys import Keystore, validate_secret

MACHINE = b"props-machine-" + b"p" * 18
PROVIDERS = st.sampled_from(["openai", "anthropic", "gemini", "secret"])
NAMES = st.sampled_from(["default", "work", "a.b-c_d"])
VALUE_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
VALUES = st.text(VALUE_CHARS, min_size=1, max_size=120)
BAD_VALUES = st.one_of(
    st.just(""),
    st.text(" \t\n", min_size=1, max_size=5),
    st.builds(lambda a, b: a + " " + b, VALUES, VALUES),
    st.builds(lambda a, c: a + c, VALUES, st.sampled_from(["\x00", "\x7f", "é", "\u200b"])),
    st.integers(4097, 6000).map(lambda n: "k" * n),
)


class KeystoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.home = Path(tempfile.mkdtemp(prefix="byok-props-"))
        self.store = Keystore(self.home, machine_id=MACHINE)
        self.model: dict[tuple[str, str], str] = {}
        self.verified: set[tuple[str, str]] = set()
        self.kids: set[str] = set()

    def teardown(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)

    @rule(provider=PROVIDERS, name=NAMES, value=VALUES)
    def set_key(self, provider: str, name: str, value: str) -> None:
        info = self.store.set(provider, value, name)
        self.model[(provider, name)] = value
        self.verified.discard((provider, name))
        assert info.last4 == (value[-4:] if len(value) >= 12 else "")

    @rule(provider=PROVIDERS, name=NAMES)
    def delete_key(self, provider: str, name: str) -> None:
        existed = self.store.delete(provider, name)
        assert existed == ((provider, name) in self.model)
        self.model.pop((provider, name), None)
        self.verified.discard((provider, name))

    @rule(provider=PROVIDERS, name=NAMES)
    def mark_verified(self, provider: str, name: str) -> None:
        try:
            self.store.mark_verified(provider, name)
        except KeyError:
            assert (provider, name) not in self.model
        else:
            self.verified.add((provider, name))

    @rule()
    def rotate(self) -> None:
        if not self.model and not self.store.exists():
            try:
                self.store.rotate()
            except KeystoreError:
                return
            raise AssertionError("rotate() of a missing store succeeded")
        result = self.store.rotate()
        assert result["kid"] not in self.kids
        self.kids.add(result["kid"])
        assert result["entries"] == len(self.model)
        assert len(list((self.home / "kek").iterdir())) == 1

    @rule()
    def reopen(self) -> None:
        self.store = Keystore(self.home, machine_id=MACHINE)

    @rule(provider=PROVIDERS, name=NAMES, value=BAD_VALUES)
    def bad_value_changes_nothing(self, provider: str, name: str, value: str) -> None:
        before = self.store.path.read_bytes() if self.store.exists() else None
        try:
            validate_secret(value)
        except InvalidSecretError:
            pass
        else:
            return  # e.g. only surrounding whitespace: a valid key after all
        try:
            self.store.set(provider, value, name)
        except InvalidSecretError:
            pass
        else:
            raise AssertionError("an invalid value was stored")
        after = self.store.path.read_bytes() if self.store.exists() else None
        assert after == before

    @invariant()
    def matches_model(self) -> None:
        infos = self.store.list()
        assert {(i.provider, i.name) for i in infos} == set(self.model)
        assert len(infos) == len(self.model)  # no duplicates
        for info in infos:
            key = (info.provider, info.name)
            assert self.store.get(*key).reveal() == self.model[key]
            assert (info.last_verified is not None) == (key in self.verified)
            assert info.kind == ("secret" if info.provider == "secret" else "provider")


KeystoreMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestKeystoreStateMachine = KeystoreMachine.TestCase
