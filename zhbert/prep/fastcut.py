"""jieba's accurate-mode block cut, re-implemented for speed with identical output.

jieba (accurate mode) cuts a block of Chinese characters in two steps:

1. **Dictionary route** (``Tokenizer.get_DAG`` + ``Tokenizer.calc``): for every start
   position, each dictionary word starting there is a candidate; dynamic programming from
   the right picks the segmentation with the highest sum of ``log(freq) - log(total)``.
2. **HMM for unknown runs** (``finalseg``): single characters the route leaves alone are
   collected; a run of 2+ of them that is not itself a dictionary word goes through a
   4-state (B/M/E/S) Viterbi decoder, which finds new words -- mostly names.

jieba builds a dict of candidate lists per block, calls ``math.log`` for every candidate,
and its Viterbi copies a path list per state per character. ``FastCut`` computes the same
numbers in the same order -- the same floating-point sums, so the same argmax -- with the
route fused into one right-to-left pass over a table of precomputed log probabilities, and
the Viterbi run for all HMM runs of a batch at once (numpy, one (n, L) problem per run
length, back-pointers instead of path copies). Ties are broken as jieba's ``max`` over
``(score, position)`` / ``(score, state)`` tuples breaks them: the larger position, the
later state letter.

The tables are read from the ``jieba.Tokenizer`` (its ``FREQ``/``total``, user dictionary
included) and from ``jieba.finalseg`` (start/transition/emission probabilities, forced
splits) when ``FastCut`` is built: build it after loading a user dictionary. Tests check
the output equals jieba's own block cut on real text, with and without the HMM.
"""

from __future__ import annotations

import re
from math import log

_MISSING = object()
_HMM_CACHE_SIZE = 12_000  # HMM runs whose words ``cut_hmm_many`` callers may remember (see segment.py)


def _plan_buf(buf: str, plan: list, freq, hmm_cache: dict, todo: dict) -> None:
    """A run of characters the route left single, as jieba's ``__cut_DAG`` treats it: one
    character is a word; a run that is a dictionary word is cut into characters; any other
    run goes to the HMM -- into the plan as its cached words (a list) or, to be decoded with
    the batch, as a 1-tuple."""
    if len(buf) == 1:
        plan.append(buf)
    elif not freq.get(buf):
        got = hmm_cache.get(buf)
        if got is None:
            plan.append((buf,))
            todo[buf] = None
        else:
            plan.append(got)
    else:
        plan.extend(buf)


class FastCut:
    """Block cuts equal to jieba's private ``__cut_DAG`` (HMM) / ``__cut_DAG_NO_HMM``."""

    def __init__(self, tokenizer):
        from jieba import finalseg

        tokenizer.check_initialized()
        logtotal = log(tokenizer.total)
        # word -> log(freq) - log(total) (jieba's calc computes exactly this difference before
        # adding the route's score), None for a prefix-only entry (freq 0): still a prefix
        # to extend, never a candidate word.
        self._logp = {w: (log(f) - logtotal if f else None) for w, f in tokenizer.FREQ.items()}
        self._freq = tokenizer.FREQ
        self._unknown = log(1) - logtotal  # jieba: log(FREQ.get(char) or 1) - logtotal
        self._finalseg = finalseg
        self.viterbi = Viterbi(finalseg.start_P, finalseg.trans_P, finalseg.emit_P, finalseg.MIN_FLOAT)
        self._eng = re.compile("[a-zA-Z0-9]")  # jieba.re_eng

    def route(self, s: str) -> list[int]:
        """For each start position, the end (exclusive) of the word the best route takes."""
        get, n, missing, unknown = self._logp.get, len(s), _MISSING, self._unknown
        score = [0.0] * (n + 1)
        end = [0] * n
        for k in range(n - 1, -1, -1):
            best, best_x, i = None, k, k
            lp = get(s[k], missing)
            while lp is not missing:
                if lp is not None:
                    sc = lp + score[i + 1]
                    if best is None or sc >= best:  # ties: the longer word, as jieba's max
                        best, best_x = sc, i
                i += 1
                if i >= n:
                    break
                lp = get(s[k:i + 1], missing)
            if best is None:  # no dictionary word starts here: the character alone
                best = unknown + score[k + 1]
            score[k] = best
            end[k] = best_x + 1
        return end

    def cut_hmm(self, s: str, hmm_cache: dict | None = None) -> list[str]:
        """jieba's ``__cut_DAG``: the route, with runs of single characters through the HMM."""
        return self.cut_hmm_many([s], hmm_cache)[0]

    def cut_hmm_many(self, blocks: list[str], hmm_cache: dict | None = None) -> list[list[str]]:
        """``[cut_hmm(b) for b in blocks]`` with every HMM run of the batch decoded in one
        vectorised Viterbi pass (``hmm_cut_many``); `hmm_cache` maps run -> words."""
        if hmm_cache is None:
            hmm_cache = {}
        freq = self._freq
        plans: list[list] = []  # per block, in order: words (str), HMM words (list), HMM runs (1-tuple)
        todo: dict[str, None] = {}
        for s in blocks:
            end = self.route(s)
            plan: list = []
            x, n, buf = 0, len(s), ""
            while x < n:
                y = end[x]
                if y - x == 1:
                    buf += s[x]
                else:
                    if buf:
                        _plan_buf(buf, plan, freq, hmm_cache, todo)
                        buf = ""
                    plan.append(s[x:y])
                x = y
            if buf:
                _plan_buf(buf, plan, freq, hmm_cache, todo)
            plans.append(plan)
        if todo:
            got = dict(zip(todo, self.hmm_cut_many(list(todo))))
            if len(hmm_cache) + len(got) > _HMM_CACHE_SIZE:
                hmm_cache.clear()
            hmm_cache.update(got)
        else:
            got = {}
        out = []
        for plan in plans:
            words: list[str] = []
            for item in plan:
                if type(item) is str:
                    words.append(item)
                elif type(item) is list:
                    words.extend(item)
                else:
                    words.extend(got[item[0]])
            out.append(words)
        return out

    def hmm_cut_many(self, runs: list[str]) -> list[list[str]]:
        """``[list(jieba.finalseg.cut(r)) for r in runs]``, the Viterbi vectorised over runs."""
        fs = self._finalseg
        re_han, re_skip = fs.re_han, fs.re_skip
        split_runs = [re_han.split(r) for r in runs]  # odd items: han blocks; even: the rest
        han = list(dict.fromkeys(p for parts in split_runs for p in parts[1::2]))
        words_of = dict(zip(han, self.viterbi.words_many(han)))
        force_split = fs.Force_Split_Words
        out = []
        for parts in split_runs:
            words: list[str] = []
            for j, part in enumerate(parts):
                if j % 2:
                    if force_split:
                        for w in words_of[part]:
                            words.extend(w) if w in force_split else words.append(w)
                    else:
                        words.extend(words_of[part])
                elif part:
                    words.extend(x for x in re_skip.split(part) if x)
            out.append(words)
        return out

    def cut_no_hmm(self, s: str) -> list[str]:
        """jieba's ``__cut_DAG_NO_HMM``: the route, with runs of single Latin/digit characters joined."""
        end = self.route(s)
        eng = self._eng.match
        out: list[str] = []
        x, n, buf = 0, len(s), ""
        while x < n:
            y = end[x]
            word = s[x:y]
            if y - x == 1 and eng(word):
                buf += word
            else:
                if buf:
                    out.append(buf)
                    buf = ""
                out.append(word)
            x = y
        if buf:
            out.append(buf)
        return out

    def hmm_cut(self, s: str) -> list[str]:
        """``list(jieba.finalseg.cut(s))``."""
        return self.hmm_cut_many([s])[0]


def _hmm_words(s: str, states: str) -> list[str]:
    """``finalseg.__cut``'s words from the Viterbi state string (B/M/E/S) of `s`."""
    out: list[str] = []
    begin = nexti = 0
    for i, pos in enumerate(states):
        if pos == "B":
            begin = i
        elif pos == "E":
            out.append(s[begin:i + 1])
            nexti = i + 1
        elif pos == "S":
            out.append(s[i])
            nexti = i + 1
    if nexti < len(s):
        out.append(s[nexti:])
    return out


class Viterbi:
    """``finalseg.viterbi(obs, "BMES", start_P, trans_P, emit_P)``'s state string, same sums,
    same ties.

    jieba: ``V[t][y] = max((V[t-1][y0] + trans[y0][y] + emit[y][c], y0) for y0 in PrevStatus[y])``
    with PrevStatus B<-{E,S}, M<-{M,B}, S<-{S,E}, E<-{B,M} (a tie goes to the later letter),
    and the last state is the better of E and S (a tie goes to S).
    """

    def __init__(self, start_p, trans_p, emit_p, min_float: float):
        import numpy as np

        m = min_float
        self._start = tuple(start_p[y] for y in "BMES")
        # Emission log-probabilities as a table (row 0: MIN_FLOAT for a character outside
        # it, as jieba's ``emit_p[y].get(c, MIN_FLOAT)``) and code point -> row.
        chars = sorted(set().union(*(emit_p[y] for y in "BMES")))
        self._table = np.array([(m, m, m, m)] + [tuple(emit_p[y].get(c, m) for y in "BMES") for c in chars],
                               dtype=np.float64)
        self._rows = np.zeros(max([ord(c) for c in chars] + [0]) + 1, dtype=np.int64)
        self._rows[[ord(c) for c in chars]] = np.arange(1, len(chars) + 1)
        t = {(a, b): trans_p[a].get(b, m) for a in "BMES" for b in "BMES"}
        self._trans = (t["E", "B"], t["S", "B"], t["M", "M"], t["B", "M"],
                       t["B", "E"], t["M", "E"], t["S", "S"], t["E", "S"])

    def __call__(self, obs: str) -> str:
        """The state string of one observation (``words_many``'s decoder on one row)."""
        return "".join(["BMES"[k] for k in self._decode(self._emissions([obs]))[0]]) if obs else ""

    def _emissions(self, group: list[str]):
        """Emission log-probabilities (n, L, 4) of n strings of length L (MIN_FLOAT for a
        character outside the table, as jieba's ``emit_p[y].get(c, MIN_FLOAT)``)."""
        import numpy as np

        table, rows = self._table, self._rows
        cps = np.frombuffer("".join(group).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        em = table[rows[np.minimum(cps, len(rows) - 1)] * (cps < len(rows))]  # (n*L, 4)
        return em.reshape(len(group), -1, 4)

    def words_many(self, blocks: list[str]) -> list[list[str]]:
        """``list(finalseg.__cut(b))`` for each block of characters, decoded together.

        Blocks of one length are one (n, L) problem: the recursion above runs on length-n
        float64 vectors (the same IEEE sums, so the same decisions and ties) and the
        back-pointers are followed for all rows at once. A state string of the regular
        form (B M* E | S)* is cut at its E/S states in one pass; any other string (possible
        only when MIN_FLOAT sums tie) takes jieba's loop (``_hmm_words``).
        """
        import numpy as np

        result: dict[str, list[str]] = {}
        by_len: dict[int, list[str]] = {}
        for b in blocks:
            by_len.setdefault(len(b), []).append(b)
        for length, group in by_len.items():
            if length <= 1:
                for b in group:  # one character: one word, whatever its state
                    result[b] = [b] if b else []
                continue
            joined = "".join(group)
            states = self._decode(self._emissions(group))  # (n, L) int8, 0..3 = B M E S
            starts_word = (states == 0) | (states == 3)
            ends_word = states >= 2
            regular = starts_word[:, 0] & np.all(starts_word[:, 1:] == ends_word[:, :-1], axis=1)
            if regular.all():
                reg_rows, bad_rows = group, []
            else:
                idx = np.flatnonzero(regular).tolist()
                reg_rows = [group[i] for i in idx]
                bad_rows = np.flatnonzero(~regular).tolist()
                ends_word = ends_word[regular]
                joined = "".join(reg_rows)
            if reg_rows:
                ends = (np.flatnonzero(ends_word.ravel()) + 1).tolist()
                words = [joined[a:b] for a, b in zip([0] + ends[:-1], ends)]
                counts = np.cumsum(ends_word.sum(axis=1)).tolist()
                for b, lo, hi in zip(reg_rows, [0] + counts[:-1], counts):
                    result[b] = words[lo:hi]
            for i in bad_rows:
                b = group[i]
                result[b] = _hmm_words(b, "".join(["BMES"[k] for k in states[i]]))
        return [result[b] for b in blocks]

    def _decode(self, em):
        """Viterbi states (n, L) int8 for emission log-probabilities em (n, L, 4)."""
        import numpy as np

        n, length, _ = em.shape
        tEB, tSB, tMM, tBM, tBE, tME, tSS, tES = self._trans
        sB, sM, sE, sS = self._start
        vB, vM, vE, vS = sB + em[:, 0, 0], sM + em[:, 0, 1], sE + em[:, 0, 2], sS + em[:, 0, 3]
        back = np.empty((length, 4, n), dtype=np.int8)
        where = np.where

        def best(early, late, i_early, i_late):
            """Elementwise max over two predecessor states; a tie goes to the later letter."""
            c = late >= early
            return where(c, late, early), where(c, i_late, i_early)

        for t in range(1, length):
            mB, mM, mE, mS = em[:, t, 0], em[:, t, 1], em[:, t, 2], em[:, t, 3]
            nB, back[t, 0] = best(vE + tEB + mB, vS + tSB + mB, 2, 3)
            nM, back[t, 1] = best(vB + tBM + mM, vM + tMM + mM, 0, 1)
            nE, back[t, 2] = best(vB + tBE + mE, vM + tME + mE, 0, 1)
            nS, back[t, 3] = best(vE + tES + mS, vS + tSS + mS, 2, 3)
            vB, vM, vE, vS = nB, nM, nE, nS
        states = np.empty((n, length), dtype=np.int8)
        state = where(vS >= vE, 3, 2).astype(np.int8)
        states[:, -1] = state
        ar = np.arange(n)
        for t in range(length - 1, 0, -1):
            state = back[t][state, ar]
            states[:, t - 1] = state
        return states
