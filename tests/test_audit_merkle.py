"""Properties and known answers for the RFC 6962 Merkle tree in oneoff._audit.merkle."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oneoff._audit.merkle import (
    EMPTY_ROOT,
    TreeBuilder,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from oneoff.errors import AuditError

# --- obviously-correct references, transcribed from RFC 6962 section 2.1 ------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return [] if m in (0, len(d)) else ref_subproof(m, d, True)


# The "shape" of a proof is the sequence of sibling sides the verifier walks. RFC 9162
# verification binds a tree size only through that shape, so a proof checked against
# a different size is accepted exactly when both sizes give the same shape.


def path_shape(m: int, n: int) -> tuple[str, ...]:
    if n == 1:
        return ()
    k = _k(n)
    if m < k:
        return (*path_shape(m, k), "R")
    return (*path_shape(m - k, n - k), "L")


def proof_shape(m: int, n: int, b: bool = True) -> tuple[str, ...]:
    if m == 0:
        return ("empty-old-tree",)
    if m == n:
        return ("old-root",) if b else ("given",)
    k = _k(n)
    if m <= k:
        return (*proof_shape(m, k, b), "R")
    return (*proof_shape(m - k, n - k, False), "L")


def consistency_shape(m: int, n: int) -> tuple[str, ...]:
    if not 0 <= m <= n:
        return ("invalid",)
    if m == n and m > 0:
        return ("equal",)
    return proof_shape(m, n)


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# Unique leaves: with duplicates a proof for one position legitimately proves the
# same leaf hash at a twin position, which would muddy "tampering must fail".
leaves_st = st.one_of(
    st.lists(st.binary(max_size=6), unique=True, max_size=300),
    st.integers(0, 300).map(lambda n: [i.to_bytes(2, "big") for i in range(n)]),
).map(lambda data: [leaf_hash(x) for x in data])

bits = st.integers(0, 255)

# --- known answers --------------------------------------------------------------------

# Inputs and expected hashes of the certificate-transparency reference test vectors.
CT_INPUTS = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_LEAVES = [leaf_hash(x) for x in CT_INPUTS]
H_0 = "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"
H_23 = "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"
H_4567 = "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"
H_4 = "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"
H_67 = "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"
H_5 = "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"


def test_empty_tree_hash_is_sha256_of_the_empty_string() -> None:
    """The root of zero leaves is SHA-256 of no bytes, whichever way it is computed."""
    expected = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert expected == EMPTY_ROOT
    assert root([]) == expected
    assert TreeBuilder().root() == expected


def test_leaf_and_node_hashes_use_the_rfc_domain_prefixes() -> None:
    """A leaf hashes under prefix 0x00 and an interior node under prefix 0x01."""
    a, b = b"A" * 32, b"B" * 32
    assert leaf_hash(b"event") == hashlib.sha256(b"\x00event").digest()
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert leaf_hash(b"") == bytes.fromhex(CT_ROOTS[0])


def test_three_leaf_root_matches_a_hand_computed_value() -> None:
    """MTH of three leaves is H(1 || H(1 || l0 || l1) || l2), l2 promoted unpaired."""
    s = hashlib.sha256
    l0, l1, l2 = (s(b"\x00" + d).digest() for d in (b"a", b"b", b"c"))
    expected = s(b"\x01" + s(b"\x01" + l0 + l1).digest() + l2).digest()
    assert root([l0, l1, l2]) == expected


def test_five_leaf_root_matches_a_hand_computed_value() -> None:
    """MTH of five leaves splits 4 + 1: H(1 || MTH(first four) || l4)."""
    s = hashlib.sha256
    ls = [s(b"\x00" + bytes([i])).digest() for i in range(5)]
    left = s(b"\x01" + ls[0] + ls[1]).digest()
    right = s(b"\x01" + ls[2] + ls[3]).digest()
    expected = s(b"\x01" + s(b"\x01" + left + right).digest() + ls[4]).digest()
    assert root(ls) == expected


@pytest.mark.parametrize("n", range(1, 9))
def test_roots_match_the_certificate_transparency_vectors(n: int) -> None:
    """Roots of the first n CT reference inputs equal the published values."""
    assert root(CT_LEAVES[:n]).hex() == CT_ROOTS[n - 1]
    tb = TreeBuilder()
    tb.extend(CT_LEAVES[:n])
    assert tb.root().hex() == CT_ROOTS[n - 1]


@pytest.mark.parametrize(
    ("index", "size", "expected"),
    [
        (0, 8, [H_0, H_23, H_4567]),
        (5, 8, [H_4, H_67, CT_ROOTS[3]]),
        (2, 3, [CT_ROOTS[1]]),
        (0, 1, []),
    ],
)
def test_inclusion_proofs_match_known_vectors(index: int, size: int, expected: list[str]) -> None:
    """Audit paths for the CT inputs equal the published sibling lists and verify."""
    proof = inclusion_proof(index, CT_LEAVES[:size])
    assert [h.hex() for h in proof] == expected
    root_hash = bytes.fromhex(CT_ROOTS[size - 1])
    assert verify_inclusion(CT_LEAVES[index], index, size, proof, root_hash)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (1, 8, [H_0, H_23, H_4567]),
        (6, 8, [H_5, H_67, CT_ROOTS[3]]),
        (2, 5, [H_23, H_4]),
    ],
)
def test_consistency_proofs_match_known_vectors(old: int, new: int, expected: list[str]) -> None:
    """Consistency proofs between CT tree sizes equal the published lists and verify."""
    proof = consistency_proof(old, CT_LEAVES[:new])
    assert [h.hex() for h in proof] == expected
    old_root, new_root = (bytes.fromhex(CT_ROOTS[s - 1]) for s in (old, new))
    assert verify_consistency(old, new, old_root, new_root, proof)


# --- builder --------------------------------------------------------------------------


@settings(deadline=None)
@given(leaves=leaves_st, cuts=st.lists(st.integers(0, 300), max_size=4))
def test_tree_builder_root_equals_reference_mth(leaves: list[bytes], cuts: list[int]) -> None:
    """Appending one by one or in batches of any length gives the reference MTH."""
    tb = TreeBuilder()
    start = 0
    for i, cut in enumerate([*sorted({min(c, len(leaves)) for c in cuts}), len(leaves)]):
        chunk = leaves[start:cut]
        if i % 2:
            for h in chunk:
                tb.append(h)
        else:
            tb.extend(chunk)
        start = max(start, cut)
        assert tb.size == start
    assert tb.root() == ref_mth(leaves)
    assert root(leaves) == ref_mth(leaves)


def test_tree_builder_extend_over_many_aligned_chunks_equals_root() -> None:
    """extend() over sizes that cross its internal batch boundaries keeps the right root."""
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(3000)]
    for start in (0, 1, 255, 256, 257, 700):
        tb = TreeBuilder()
        tb.extend(leaves[:start])
        tb.extend(iter(leaves[start:]))
        assert tb.size == len(leaves)
        assert tb.root() == root(leaves)


@settings(deadline=None)
@given(leaves=leaves_st, extra=leaves_st)
def test_tree_builder_resumes_from_a_saved_frontier(
    leaves: list[bytes], extra: list[bytes]
) -> None:
    """A builder restored from (size, frontier) continues exactly like the original."""
    tb = TreeBuilder()
    tb.extend(leaves)
    assert len(tb.frontier) == tb.size.bit_count()
    resumed = TreeBuilder.from_frontier(tb.size, tb.frontier)
    resumed.extend(extra)
    assert resumed.root() == ref_mth(leaves + extra)


def test_tree_builder_rejects_bad_input() -> None:
    """Wrong-length leaf hashes and frontiers that do not fit the size raise AuditError."""
    tb = TreeBuilder()
    with pytest.raises(AuditError):
        tb.append(b"short")
    with pytest.raises(AuditError):
        tb.extend([leaf_hash(b"ok"), b"x" * 33])
    assert tb.size == 1
    with pytest.raises(AuditError):
        TreeBuilder.from_frontier(3, [leaf_hash(b"a")])
    with pytest.raises(AuditError):
        TreeBuilder.from_frontier(-1, [])
    with pytest.raises(AuditError):
        root([b"\x00" * 31])


# --- inclusion ------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(leaves=leaves_st)
def test_every_inclusion_proof_matches_reference_and_verifies(leaves: list[bytes]) -> None:
    """For every index the audit path equals RFC 6962 PATH and verifies against the root."""
    n = len(leaves)
    r = ref_mth(leaves)
    for i in range(n):
        proof = inclusion_proof(i, leaves)
        assert proof == ref_path(i, leaves)
        assert verify_inclusion(leaves[i], i, n, proof, r)


@settings(max_examples=300, deadline=None)
@given(leaves=leaves_st.filter(bool), data=st.data())
def test_tampered_inclusion_proofs_fail(leaves: list[bytes], data: st.DataObject) -> None:
    """Flipping a bit of a proof element, the leaf, the index or the root is rejected."""
    n = len(leaves)
    i = data.draw(st.integers(0, n - 1), label="index")
    proof = inclusion_proof(i, leaves)
    r = root(leaves)
    bit = data.draw(bits, label="bit")
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1), label="element")
        bad = [*proof[:j], flip(proof[j], bit), *proof[j + 1 :]]
        assert not verify_inclusion(leaves[i], i, n, bad, r)
    assert not verify_inclusion(flip(leaves[i], bit), i, n, proof, r)
    assert not verify_inclusion(leaves[i], i, n, proof, flip(r, bit))
    index_bit = data.draw(st.integers(0, 63), label="index bit")
    assert not verify_inclusion(leaves[i], i ^ (1 << index_bit), n, proof, r)
    assert not verify_inclusion(leaves[i], i, n, [*proof, proof[0] if proof else r], r)
    if proof:
        assert not verify_inclusion(leaves[i], i, n, proof[:-1], r)


@settings(max_examples=300, deadline=None)
@given(leaves=leaves_st.filter(bool), data=st.data())
def test_inclusion_under_another_size_holds_only_for_an_identical_path_shape(
    leaves: list[bytes], data: st.DataObject
) -> None:
    """A flipped size bit is rejected unless both sizes walk the same sibling sides."""
    n = len(leaves)
    i = data.draw(st.integers(0, n - 1), label="index")
    proof = inclusion_proof(i, leaves)
    other = n ^ (1 << data.draw(st.integers(0, 63), label="size bit"))
    accepted = verify_inclusion(leaves[i], i, other, proof, root(leaves))
    assert accepted == (i < other and path_shape(i, other) == path_shape(i, n))


def test_inclusion_size_shape_limit_example() -> None:
    """Leaf 0's path in a 5-leaf tree also checks as size 6: only the signed size binds it."""
    leaves = [leaf_hash(bytes([i])) for i in range(5)]
    proof = inclusion_proof(0, leaves)
    assert verify_inclusion(leaves[0], 0, 6, proof, root(leaves))
    assert not verify_inclusion(leaves[0], 0, 4, proof, root(leaves))


@pytest.mark.parametrize("n", range(1, 34))
def test_every_bit_of_small_inclusion_proofs_is_load_bearing(n: int) -> None:
    """In trees of up to 33 leaves, flipping any single proof bit breaks verification."""
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(n)]
    r = root(leaves)
    for i in range(n):
        proof = inclusion_proof(i, leaves)
        for j, element in enumerate(proof):
            for bit in range(256):
                bad = [*proof[:j], flip(element, bit), *proof[j + 1 :]]
                assert not verify_inclusion(leaves[i], i, n, bad, r)


def test_inclusion_rejects_malformed_arguments() -> None:
    """Out-of-range indexes raise when proving and return False when verifying."""
    leaves = CT_LEAVES
    with pytest.raises(AuditError):
        inclusion_proof(8, leaves)
    with pytest.raises(AuditError):
        inclusion_proof(-1, leaves)
    with pytest.raises(AuditError):
        inclusion_proof(0, [])
    r = root(leaves)
    proof = inclusion_proof(3, leaves)
    assert not verify_inclusion(leaves[3], 8, 8, proof, r)
    assert not verify_inclusion(leaves[3], -1, 8, proof, r)
    assert not verify_inclusion(leaves[3], 3, 0, [], EMPTY_ROOT)
    assert not verify_inclusion(leaves[3], 3, 8, [*proof[:-1], proof[-1][:31]], r)
    assert not verify_inclusion(leaves[3][:31], 3, 8, proof, r)


# --- consistency ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(leaves=leaves_st)
def test_every_consistency_proof_matches_reference_and_verifies(leaves: list[bytes]) -> None:
    """For every old size m <= n the proof equals RFC 6962 PROOF and verifies."""
    n = len(leaves)
    new_root = root(leaves)
    for m in range(n + 1):
        proof = consistency_proof(m, leaves)
        assert proof == ref_proof(m, leaves)
        assert verify_consistency(m, n, ref_mth(leaves[:m]), new_root, proof)


@settings(max_examples=300, deadline=None)
@given(leaves=leaves_st, data=st.data())
def test_tampered_consistency_proofs_fail(leaves: list[bytes], data: st.DataObject) -> None:
    """Flipping a bit of a proof element or of the old root is always rejected.

    Flipping the new root is rejected too, except from the empty tree, which every
    tree extends and whose proof is empty.
    """
    n = len(leaves)
    m = data.draw(st.integers(0, n), label="old size")
    proof = consistency_proof(m, leaves)
    old_root, new_root = root(leaves[:m]), root(leaves)
    bit = data.draw(bits, label="bit")
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1), label="element")
        bad = [*proof[:j], flip(proof[j], bit), *proof[j + 1 :]]
        assert not verify_consistency(m, n, old_root, new_root, bad)
        assert not verify_consistency(m, n, old_root, new_root, proof[:-1])
    assert not verify_consistency(m, n, flip(old_root, bit), new_root, proof)
    assert verify_consistency(m, n, old_root, flip(new_root, bit), proof) == (m == 0)
    assert not verify_consistency(m, n, old_root, new_root, [*proof, old_root])


@settings(max_examples=300, deadline=None)
@given(leaves=leaves_st, data=st.data())
def test_consistency_under_other_sizes_holds_only_for_an_identical_proof_shape(
    leaves: list[bytes], data: st.DataObject
) -> None:
    """A flipped bit in either size is rejected unless the proof shape is unchanged."""
    n = len(leaves)
    m = data.draw(st.integers(0, n), label="old size")
    proof = consistency_proof(m, leaves)
    old_root, new_root = root(leaves[:m]), root(leaves)
    mask = 1 << data.draw(st.integers(0, 63), label="size bit")
    for m2, n2 in ((m ^ mask, n), (m, n ^ mask)):
        accepted = verify_consistency(m2, n2, old_root, new_root, proof)
        assert accepted == (consistency_shape(m2, n2) == consistency_shape(m, n))


def test_a_rewritten_history_fails_consistency() -> None:
    """Changing any earlier entry makes every proof from the old checkpoint fail."""
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(40)]
    for m in range(1, 40):
        old_root = root(leaves[:m])
        for victim in range(m):
            forged = list(leaves)
            forged[victim] = leaf_hash(b"rewritten")
            proof = consistency_proof(m, forged)
            assert not verify_consistency(m, 40, old_root, root(forged), proof)


def test_consistency_rejects_malformed_arguments() -> None:
    """Bad sizes raise when proving and return False when verifying."""
    with pytest.raises(AuditError):
        consistency_proof(9, CT_LEAVES)
    with pytest.raises(AuditError):
        consistency_proof(-1, CT_LEAVES)
    r4, r8 = (bytes.fromhex(CT_ROOTS[s - 1]) for s in (4, 8))
    proof = consistency_proof(4, CT_LEAVES)
    assert verify_consistency(4, 8, r4, r8, proof)
    assert not verify_consistency(8, 4, r8, r4, proof)
    assert not verify_consistency(4, 8, r4, r8, [])
    assert not verify_consistency(4, 8, r4, r8, [proof[0][:16]])
    assert not verify_consistency(8, 8, r8, r8, proof)
    assert verify_consistency(8, 8, r8, r8, [])
    assert not verify_consistency(8, 8, r8, r4, [])
    assert verify_consistency(0, 8, EMPTY_ROOT, r8, [])
    assert not verify_consistency(0, 8, r4, r8, [])
