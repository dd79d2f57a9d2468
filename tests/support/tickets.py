"""The ticket ledger: checks that per id the numbers handed out are exactly 1..n
(the load runs, the fleet tests, the service's concurrency tests).

Every response of a load run goes through `TicketLedger.add`. A 200 must carry
`{"id": <the id asked for>, "turno": N}` with 1 <= N <= 2^53-1. Per id, a number
seen twice is a duplicate: always a violation. A number never seen below the
highest one is a gap. A gap is explained, not a violation, when as many requests
of that id ended without a usable answer (transport error, timeout, 5xx): such a
request may have taken a number the client never saw. A 4xx never reaches the
counter (the balancer refuses it, or the service rejects it before the store),
nor does the service's 503 whose message says so ("no increment was sent", "no
increment ran"): neither explains a gap. The failover fence's moves (every id's next
number moved past what a promoted Redis may lack, announced by the app's log and
metric) explain gaps too: `announce_skip` says how many numbers per id they moved.
"""

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field

MAX_SAFE_INTEGER = 2**53 - 1
# How a 503 ends when the increment certainly did not run: the app's messages, and the
# balancer's own 503 (roles/balancer/vars/main.yml), whose text is in its "error" field.
NOTHING_RAN = ("no increment was sent", "no increment ran", "it was not sent, nothing was counted")


@dataclass
class IdVerdict:
    id: str
    answered: int
    highest: int
    duplicates: list[int]
    missing: int
    unknown_outcomes: int
    announced: int = 0

    @property
    def violation(self) -> str | None:
        if self.duplicates:
            shown = ", ".join(str(n) for n in self.duplicates[:5])
            return f"{self.id}: {len(self.duplicates)} duplicate number(s): {shown}"
        if self.missing > self.unknown_outcomes + self.announced:
            return (f"{self.id}: {self.missing} number(s) missing below {self.highest}, "
                    f"only {self.unknown_outcomes} request(s) with an unknown outcome"
                    + (f" and {self.announced} announced by failover fences" if self.announced else ""))
        return None


@dataclass
class TicketLedger:
    """The one ticket checker of the suites and tools."""

    numbers: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    unknown: Counter = field(default_factory=Counter)
    malformed: list[str] = field(default_factory=list)
    announced: int = 0

    def add(self, record: dict) -> None:
        """Take one generator record: id, status, and body or error."""
        ident, status = record["id"], record["status"]
        if status == 200:
            number = self._ticket(ident, record.get("body", ""))
            if number is not None:
                self.numbers[ident].append(number)
        elif status == 0 or status >= 500 and not self._nothing_ran(record.get("body", "")):
            self.unknown[ident] += 1

    def add_numbers(self, ident: str, numbers: list[int], unknown_outcomes: int = 0) -> None:
        """Take the numbers a client already parsed for one id, and how many of its
        requests ended without a usable answer."""
        self.numbers[ident].extend(numbers)
        self.unknown[ident] += unknown_outcomes

    def announce_skip(self, numbers: int) -> None:
        """A failover fence moved every id's next number past `numbers` numbers."""
        self.announced += numbers

    @staticmethod
    def _nothing_ran(body: str) -> bool:
        try:
            answer = json.loads(body)
            message = answer.get("message", answer.get("error", ""))
        except (ValueError, AttributeError):
            return False
        return isinstance(message, str) and message.endswith(NOTHING_RAN)

    def _ticket(self, ident: str, body: str) -> int | None:
        try:
            answer = json.loads(body)
        except ValueError:
            self.malformed.append(f"{ident}: 200 with a body that is not JSON: {body[:80]!r}")
            return None
        number = answer.get("turno") if isinstance(answer, dict) else None
        if (not isinstance(answer, dict) or answer.get("id") != ident
                or type(number) is not int or not 1 <= number <= MAX_SAFE_INTEGER):
            self.malformed.append(f"{ident}: 200 with an unexpected body: {body[:80]!r}")
            return None
        return number

    def verdicts(self) -> list[IdVerdict]:
        result = []
        for ident in sorted(set(self.numbers) | set(self.unknown)):
            seen = self.numbers.get(ident, [])
            counts = Counter(seen)
            highest = max(seen, default=0)
            result.append(IdVerdict(
                id=ident,
                answered=len(seen),
                highest=highest,
                duplicates=sorted(n for n, c in counts.items() if c > 1),
                missing=highest - len(counts),
                unknown_outcomes=self.unknown[ident],
                announced=self.announced,
            ))
        return result

    def duplicates(self) -> dict[str, list[int]]:
        """id → the numbers handed out more than once."""
        return {v.id: v.duplicates for v in self.verdicts() if v.duplicates}

    def missing(self) -> dict[str, int]:
        """id → how many numbers below its highest were never seen (gaps)."""
        return {v.id: v.missing for v in self.verdicts()}

    def exactly_one_to_n(self) -> bool:
        """Per id the numbers seen are exactly 1..n: no duplicate, no gap, nothing malformed."""
        return not self.malformed and all(not v.duplicates and not v.missing for v in self.verdicts())

    def violations(self) -> list[str]:
        found = list(self.malformed)
        found += [v.violation for v in self.verdicts() if v.violation]
        return found

    def summary(self) -> dict:
        verdicts = self.verdicts()
        return {
            "ids": len(verdicts),
            "tickets": sum(v.answered for v in verdicts),
            "duplicates": sum(len(v.duplicates) for v in verdicts),
            "missing": sum(v.missing for v in verdicts),
            "unknown_outcomes": sum(v.unknown_outcomes for v in verdicts),
            "announced_per_id": self.announced,
            "malformed": len(self.malformed),
            "violations": self.violations(),
        }
