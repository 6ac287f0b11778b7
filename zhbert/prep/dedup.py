"""Near-duplicate documents: MinHash signatures and locality-sensitive hashing (``data.near_dedup``).

Exact de-duplication (zhbert.prep.corpus, on by default) drops a document only when its
normalised sentences equal an earlier one's. Web and news corpora also repeat a text with a
changed character, a different date line or a site footer; a model pretrained on such copies
memorises them. ``data.near_dedup: true`` drops those too, the way GPT-3, Gopher and the
BigCode/The Stack pipelines do:

1. **Shingles.** A document is the set S of its character 5-grams (the sentences joined with a
   newline). Chinese has no spaces, so characters, not words, are the unit: one changed
   character in a 2,000-character article changes at most 5 of its ~2,000 shingles.
   The similarity of two documents is the Jaccard index J(A, B) = |S_A ∩ S_B| / |S_A ∪ S_B|.
   Here:

   ==  ==========================  ===============================================
   A   今天北京天气晴朗，适合出游。  10 shingles: 今天北京天, 天北京天气, …, 适合出游。
   B   今天北京天气晴朗，适宜出游。  one character changed: 4 of A's shingles become 4
                                     others, J = 6 / 14 = 0.43 (kept: below 0.8)
   ==  ==========================  ===============================================

   The same one-character change in a 2,000-character article gives J = 0.995 (dropped).

2. **MinHash** (Broder 1997). For a random hash function h, P[min h(S_A) = min h(S_B)] =
   J(A, B). ``num_perm`` (128) independent hash functions give a signature of 128 minima, and
   the share of equal positions estimates J (standard error √(J(1-J)/128) ≤ 0.044). The hash
   functions are ``datasketch``'s, drawn from ``seed`` (data.seed): the same seed gives the same
   signatures, on any machine (shingles are hashed with SHA-1 of their UTF-8, not Python's
   salted ``hash``).

3. **LSH banding.** Comparing every pair is quadratic. ``datasketch.MinHashLSH`` cuts the
   signature into b bands of r rows (b·r ≤ num_perm; for threshold 0.8 and 128 permutations
   it picks b = 9, r = 13) and files each document under the hash of each band; two documents
   become candidates when any band is equal, which happens with probability 1 - (1 - J^r)^b:
   an S-curve that is ~0 below 0.5, 0.5 near 0.81 and ~1 above 0.9 (b and r minimise the
   weighted false-positive and false-negative areas around ``threshold``).

4. **Streaming, first one wins.** Documents arrive in input order (the order prepare's
   output depends on). A document that is a candidate of any document *kept* so far is
   dropped; otherwise it is kept and inserted. Dropped documents are not inserted, so a chain
   A ≈ B ≈ C with A and C far apart keeps A and C. Same input, same seed: same documents kept
   (tested).

Cost, measured on 2,000-character documents: ~6 ms of one core per document (SHA-1 of each
shingle, then 128 permutations of the hashes with numpy), in the reading process; and about
3 KB of memory per kept document for the LSH index (zhwiki's 1.4 M articles: ~4.5 GB). Off by
default for that reason.
"""

from __future__ import annotations

from zhbert.errors import ConfigError

SHINGLE_CHARS = 5


def _datasketch():
    try:
        import datasketch
    except ImportError:
        raise ConfigError("data.near_dedup needs the datasketch package: pip install datasketch "
                          "(or set data.near_dedup=false)") from None
    return datasketch


def shingles(sentences: list[str], k: int = SHINGLE_CHARS) -> set[bytes]:
    """The character k-grams of a document (UTF-8), as MinHash hashes them; a text shorter
    than k is its own single shingle.

    >>> sorted(s.decode() for s in shingles(["一二三四五六"]))
    ['一二三四五', '二三四五六']
    """
    text = "\n".join(sentences)
    if len(text) <= k:
        return {text.encode("utf-8")}
    return {text[i:i + k].encode("utf-8") for i in range(len(text) - k + 1)}


class NearDuplicates:
    """A streaming near-duplicate filter (module docstring): ``seen_before(doc)`` is True when
    ``doc`` is a near duplicate of a document kept earlier, else it keeps ``doc`` and returns False."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, seed: int = 1):
        if not 0 < threshold <= 1:
            raise ConfigError(f"data.near_dedup_threshold must be in (0, 1], got {threshold}")
        if num_perm < 2:
            raise ConfigError(f"data.near_dedup_num_perm must be >= 2, got {num_perm}")
        ds = _datasketch()
        self._minhash = ds.MinHash
        self.num_perm = int(num_perm)
        self.seed = int(seed) % (2 ** 32)  # numpy's RandomState, which datasketch seeds, takes 32 bits
        self.lsh = ds.MinHashLSH(threshold=threshold, num_perm=self.num_perm)
        self.kept = 0

    def signature(self, sentences: list[str]):
        m = self._minhash(num_perm=self.num_perm, seed=self.seed)
        m.update_batch(shingles(sentences))
        return m

    def seen_before(self, sentences: list[str]) -> bool:
        m = self.signature(sentences)
        if self.lsh.query(m):
            return True
        self.lsh.insert(self.kept, m, check_duplication=False)
        self.kept += 1
        return False
