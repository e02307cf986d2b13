"""How many proposed tokens are worth checking: a small cost model, learnt while generating.

Checking k proposed tokens costs one batch of k + 1 tokens instead of one token; it
pays when the tokens the model accepts outnumber what the bigger batch costs. Both
sides are measured rather than assumed: the batch's cost on this machine (on a GPU, or
for a big MoE model bound by reading weights, 9 tokens cost little more than 1; on a
small CPU model nearly 6 times as much) and how often proposals are accepted, kept
apart by how long the match behind a proposal was (a quote in progress is accepted
far more often than a common phrase). ``choose`` then picks the k with the most
tokens per second, or 0 when no k beats plain decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_DRAFT = 16
# how often proposals are accepted, per token: a draft model's (match 0), and prompt lookup's
# from matches of 2, 3, 4–7, 8–15 and 16+ tokens
_MATCH_BUCKETS = (0, 2, 3, 4, 8, 16)
_PRIOR_ACCEPTANCE = (0.7, 0.4, 0.5, 0.65, 0.8, 0.9)
_PRIOR_WEIGHT = 4.0  # the prior counts as this many checked tokens
_FORGET = 0.98  # each check weighs old evidence a little less
_PRIOR_EXTRA_COST = 0.5  # a batch token's cost beside the first, as a share of one token, until measured
_SMOOTHING = 0.2  # exponential moving average of the measured costs
_MARGIN = 1.05  # expected gain a draft must promise


def _bucket(match: int) -> int:
    return max(i for i, low in enumerate(_MATCH_BUCKETS) if match >= low)


@dataclass
class _Acceptance:
    accepted: float
    checked: float

    @property
    def rate(self) -> float:
        return self.accepted / self.checked


@dataclass
class DraftLength:
    """One per loaded model: costs are the machine's and the model's, acceptance the
    kind of text it writes."""

    token_seconds: float | None = None  # one token decoded alone
    # a batch of n tokens' cost in tokens decoded alone, by n: measured per size, because it is
    # far from linear (CPU matrix kernels change with the size: here 2 tokens cost 1.8 times one,
    # 9 cost 5.7), and as a ratio to the single token's time of the moment, which grows with the
    # context (seconds measured at a long library prompt would overprice a short chat's batches)
    batch_costs: dict[int, float] = field(default_factory=dict)
    _acceptance: list[_Acceptance] = field(default_factory=lambda: [
        _Acceptance(p * _PRIOR_WEIGHT, _PRIOR_WEIGHT) for p in _PRIOR_ACCEPTANCE])

    def record_decode(self, n_tokens: int, seconds: float) -> None:
        """A decode of ``n_tokens`` (1: plain, more: a check) took ``seconds``."""
        if n_tokens == 1:
            self.token_seconds = _average(self.token_seconds, seconds)
        elif self.token_seconds:
            self.batch_costs[n_tokens] = _average(self.batch_costs.get(n_tokens), seconds / self.token_seconds)

    def record_check(self, match: int, drafted: int, accepted: int) -> None:
        """A proposal from a ``match``-token match (0: the draft model's): ``accepted`` of ``drafted`` kept. Each
        token up to and including the first rejected one was a trial."""
        stats = self._acceptance[_bucket(match)]
        trials = accepted + (1 if accepted < drafted else 0)
        stats.accepted = stats.accepted * _FORGET + accepted
        stats.checked = stats.checked * _FORGET + trials

    def new_reply(self) -> None:
        """Move each estimate halfway back to its prior: a kind of match that failed in
        the last reply (and so was not tried since) gets another chance in this one."""
        for stats, prior in zip(self._acceptance, _PRIOR_ACCEPTANCE, strict=True):
            stats.accepted = (stats.accepted + prior * _PRIOR_WEIGHT) / 2
            stats.checked = (stats.checked + _PRIOR_WEIGHT) / 2

    def acceptance(self, match: int) -> float:
        return self._acceptance[_bucket(match)].rate

    def batch_cost(self, n_tokens: int) -> float:
        """What a batch of ``n_tokens`` costs, in tokens decoded alone: measured where this
        size was, else interpolated between the sizes measured (and 1 token), else the prior
        ``_PRIOR_EXTRA_COST`` per token past the largest size measured. Sizes not yet tried
        look no worse than the prior, so they get tried."""
        measured = {1: 1.0, **self.batch_costs}
        if n_tokens in measured:
            return measured[n_tokens]
        below = max(n for n in measured if n < n_tokens)
        above = [n for n in measured if n > n_tokens]
        if not above:
            return measured[below] + _PRIOR_EXTRA_COST * (n_tokens - below)
        upper = min(above)
        share = (n_tokens - below) / (upper - below)
        return measured[below] + share * (measured[upper] - measured[below])

    def choose(self, match: int, available: int, guess_seconds: float | None = None) -> int:
        """How many of ``available`` proposed tokens to check; 0: decode one token.
        ``guess_seconds``: what making each proposed token costs (a draft model's decode)."""
        rate = min(self.acceptance(match), 0.999)
        guess = guess_seconds / self.token_seconds if guess_seconds is not None and self.token_seconds else 0.0
        best, best_gain = 0, _MARGIN
        expected = 1.0  # tokens a check yields: the first rejected (or the next) one is always gained
        kept = 1.0
        for k in range(1, min(available, MAX_DRAFT) + 1):
            kept *= rate
            expected += kept
            gain = expected / (self.batch_cost(k + 1) + guess * k)
            if gain > best_gain:
                best, best_gain = k, gain
        return best


def _average(old: float | None, new: float) -> float:
    return new if old is None else old + _SMOOTHING * (new - old)
