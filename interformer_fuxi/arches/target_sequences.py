"""Which target fields attend over which sequence fields (DIN and TransAct configs).

FuxiCTR's DIN form: ``din_target_field: [[item_id, cate_id]]`` with
``din_sequence_field: [[item_history, cate_history]]`` makes one group whose tokens are the
concatenated embeddings (``[B, 2d]`` target, ``[B, T, 2d]`` history); a plain field name is a
group of one. Without a setting, every sequence that shares the embedding table of a
categorical feature (``share_embedding: item_id``) is paired with that feature.
"""


def shared_targets(feature_map):
    """``[(target, sequence), ...]`` for each sequence sharing a categorical feature's table."""
    features = feature_map.features
    return [(spec["share_embedding"], name) for name, spec in features.items()
            if spec["type"] == "sequence" and features.get(spec.get("share_embedding"), {}).get("type")
            == "categorical"]


def _as_groups(value):
    value = [value] if isinstance(value, str) else list(value or [])
    return [(item,) if isinstance(item, str) else tuple(item) for item in value]


def _check_fields(features, targets, sequences, key):
    """Targets must be categorical, sequences sequences of one ``max_len`` (read together)."""
    for field, kind, side in [(f, "categorical", "target") for f in targets] + \
                             [(f, "sequence", "sequence") for f in sequences]:
        if features.get(field, {}).get("type") != kind:
            raise ValueError(f"{key}_{side}_field: {field!r} is not a {kind} feature of the dataset")
    if len({features[f].get("max_len") for f in sequences}) > 1:
        raise ValueError(f"{key}_sequence_field: {list(sequences)} have different max_len; sequences read "
                         "together must be aligned")


def resolve_groups(feature_map, target_field, sequence_field, key="din"):
    """Normalise the two config keys to ``[(targets, sequences), ...]`` and check them.

    Raises ``ValueError`` naming the key when a field is unknown, of the wrong type, when
    a group's two sides differ in length, or when a group's sequences differ in ``max_len``.
    """
    if target_field is None and sequence_field is None:
        pairs = shared_targets(feature_map)
        if not pairs:
            raise ValueError(f"no sequence shares a categorical feature's embedding; set {key}_target_field "
                             f"and {key}_sequence_field")
        return [((t,), (s,)) for t, s in pairs]
    targets, sequences = _as_groups(target_field), _as_groups(sequence_field)
    if len(targets) != len(sequences) or any(len(t) != len(s) for t, s in zip(targets, sequences)):
        raise ValueError(f"{key}_target_field {target_field} and {key}_sequence_field {sequence_field} "
                         "must pair up group by group and field by field")
    for group_t, group_s in zip(targets, sequences):
        _check_fields(feature_map.features, group_t, group_s, key)
    return list(zip(targets, sequences))


def resolve_fields(feature_map, target_field, sequence_field, key="transact"):
    """One action sequence: ``(targets, sequences)`` as flat tuples (the two sides need not pair).

    Defaults to all sequences sharing a categorical feature's table and those features.
    Raises ``ValueError`` naming the key for unknown or mistyped fields and unaligned sequences.
    """
    pairs = shared_targets(feature_map)
    targets = [f for group in _as_groups(target_field) for f in group] if target_field is not None \
        else list(dict.fromkeys(t for t, _ in pairs))
    sequences = [f for group in _as_groups(sequence_field) for f in group] if sequence_field is not None \
        else [s for _, s in pairs]
    if not targets or not sequences:
        raise ValueError(f"no sequence shares a categorical feature's embedding; set {key}_target_field "
                         f"and {key}_sequence_field")
    _check_fields(feature_map.features, targets, sequences, key)
    return tuple(targets), tuple(sequences)
