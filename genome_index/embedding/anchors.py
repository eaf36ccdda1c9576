"""Content-defined cut points: window boundaries that follow the sequence, not its coordinates.

Fixed windows (every 6 kb from a record's start) put a fragment's windows, and a close strain's
windows, at arbitrary offsets from the stored ones, so similarity depends on how windows happen
to overlap more than on the sequence. Anchored windows are cut where the sequence itself says:
at every canonical 16-mer whose hash is the strict minimum among its neighbours within
`radius` k-mers on either side. The rule looks only at the sequence within `radius` of the cut,
so a fragment (or a strain) cuts where the stored genome cut wherever that neighbourhood is
shared, and, because the hash is of canonical k-mers and the cut sits in the k-mer's middle, a
sequence and its reverse complement have mirrored cuts. Cuts are at least `radius` + 1 bases
apart and about 2 * `radius` apart on average. A k-mer containing N never anchors a cut.

No library does this for DNA (sourmash and minimizer tools pick k-mers, not window bounds),
hence a few lines of numpy; scipy's minimum filter would do the sliding minimum, but it goes
through float64 and so confuses 64-bit hashes.
"""

from __future__ import annotations

import numpy as np

ANCHOR_K = 16  # even, so a cut in the k-mer's middle mirrors exactly onto the reverse strand
_NO_ANCHOR = np.iinfo(np.uint64).max
_TO_CODE = bytes(("ACGT".index(chr(b)) if chr(b) in "ACGT" else 4) for b in range(256))
_MIX = np.uint64(0x9E3779B97F4A7C15)
CUT_BLOCK = 1 << 22  # k-mers a pass: memory follows this, not the record (50 bases' worth of arrays each)


def kmer_hashes(sequence: bytes, k: int = ANCHOR_K) -> np.ndarray:
    """Hash of the canonical k-mer starting at each position (the maximum where it holds an N)."""
    n = len(sequence) - k + 1
    if n <= 0:
        return np.empty(0, dtype=np.uint64)
    code = np.frombuffer(sequence.translate(_TO_CODE), dtype=np.uint8)
    forward, reverse = _packed_kmers(code, k)
    hashes = np.minimum(forward, reverse)
    with np.errstate(over="ignore"):  # a 64-bit multiply-xorshift mix; wrap-around is intended
        hashes *= _MIX
        hashes ^= hashes >> np.uint64(29)
        hashes *= _MIX
        hashes ^= hashes >> np.uint64(32)
    n_before = np.concatenate(([0], np.cumsum(code == 4)))
    hashes[n_before[k:] > n_before[:-k]] = _NO_ANCHOR
    return hashes


def _packed_kmers(code: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """2-bit packed k-mers at every start, and their reverse complements (N read as T; masked later).

    Built by doubling (an a-mer and the b-mer after it make an (a+b)-mer) in about 2 log2(k)
    passes over the sequence instead of k.
    """
    base = (code & 3).astype(np.uint64)
    forward, reverse, size = np.empty(0, np.uint64), np.empty(0, np.uint64), 0  # the k-mers built so far
    power_f, power_r, power = base, np.uint64(3) - base, 1  # the (2^j)-mers
    remaining = k
    while True:
        if remaining & 1:
            if size == 0:
                forward, reverse = power_f, power_r
            else:  # append the power-mer after the size-mer
                n = len(forward) - power
                forward = (forward[:n] << np.uint64(2 * power)) | power_f[size : size + n]
                reverse = (power_r[size : size + n] << np.uint64(2 * size)) | reverse[:n]
            size += power
        remaining >>= 1
        if not remaining:
            return forward, reverse
        n = len(power_f) - power
        power_f = (power_f[:n] << np.uint64(2 * power)) | power_f[power : power + n]
        power_r = (power_r[power : power + n] << np.uint64(2 * power)) | power_r[:n]
        power *= 2


def cut_points(sequence: bytes, radius: int, k: int = ANCHOR_K) -> np.ndarray:
    """Sorted bp positions (0 < cut < len) at which anchored windows of `sequence` end and begin.

    A k-mer anchors a cut when its hash is below every other hash within `radius` k-mers on
    both sides and that whole neighbourhood lies inside the sequence (near an end the rule
    cannot be checked, so no cut is made there).
    """
    if radius < 1:
        raise ValueError(f"anchor radius must be at least 1, got {radius}")
    n = len(sequence) - k + 1  # k-mers
    if n < 2 * radius + 1:
        return np.empty(0, dtype=np.int64)
    cuts = []
    step = max(CUT_BLOCK, 4 * radius)
    for lo in range(radius, n - radius, step):  # the k-mers lo..hi-1 as centres, with their neighbourhoods
        hi = min(lo + step, n - radius)
        hashes = kmer_hashes(sequence[lo - radius : hi + radius + k - 1], k)
        following = sliding_min(hashes, radius)  # following[i]: the least of the `radius` hashes from i on
        centre = np.arange(radius, radius + hi - lo)
        own = hashes[centre]
        anchors = centre[(own < following[centre - radius]) & (own < following[centre + 1]) & (own != _NO_ANCHOR)]
        cuts.append(anchors + (lo - radius) + k // 2)
    return np.concatenate(cuts).astype(np.int64)


def sliding_min(values: np.ndarray, width: int) -> np.ndarray:
    """out[i] = values[i : i + width].min() for every full window, exactly, in log2(width) passes."""
    out, span = values, 1
    while span * 2 <= width:
        out = np.minimum(out[:-span], out[span:])  # now each entry covers 2 * span values
        span *= 2
    rest = width - span
    return np.minimum(out[: len(out) - rest], out[rest:]) if rest else out
