"""Which config keys a run reads, which FuxiCTR / BARS keys it knows and ignores, and the check.

The rule, for every key of an expid's ``Base`` + section and of its dataset section:

* read by this runner, FuxiCTR's data pipeline or the model's constructor: fine;
* a former FuxiCTR name of a key read here (``ordered_features`` for ``use_features``,
  ``group_index`` for ``group_id``): read under the current name;
* a key FuxiCTR 2.0.x or BARS's published configs use that nothing here reads
  (``eval_interval``, ``feature_config``, another model's ``hidden_activations``, ...): one
  warning line naming it; the run goes on;
* anything else is a typo: one error line with the closest valid key.

``IGNORED_KEYS`` and ``FUXICTR_MODEL_KEYS`` were collected from FuxiCTR v2.0.0-v2.0.4 (its
library code, its model and dataset configs) and from every yaml under BARS's ``ranking/ctr/``
(``python benchmarks/bars_configs.py BARS_DIR FUXICTR_DIR --keys`` lists what those files use
and how this module classifies each key).
"""
import inspect

from .errors import UserError, suggest
from .metrics import SUPPORTED_METRICS

# Keys the runner, FuxiCTR's BaseModel, its optimizer/loss helpers and its data loader read.
RUNNER_KEYS = {
    "model", "dataset_id", "model_id", "task", "loss", "metrics", "monitor", "monitor_mode",
    "optimizer", "learning_rate", "embedding_regularizer", "net_regularizer", "batch_size",
    "epochs", "shuffle", "seed", "model_root", "num_workers", "verbose", "early_stop_patience",
    "save_best_only", "eval_steps", "reduce_lr_on_plateau", "max_gradient_norm",
    "feature_specs", "use_features", "group_id", "gpu", "train_ctr", "model_zoo",
    "checkpoint_steps", "nonfinite",  # the resumable state's cadence, the non-finite guard
}
# Keys of a dataset section (FeatureProcessor, build_dataset, read_csv).
DATASET_KEYS = {
    "data_root", "data_format", "train_data", "valid_data", "test_data", "feature_cols",
    "label_col", "min_categr_count", "valid_size", "test_size", "split_type",
    "data_block_size", "num_buckets", "group_id", "sep", "nrows",
    "csv_header", "md5", "bad_rows", "oracle_data",  # validate.py and oracle.py
    "build", "chunk_rows", "build_workers",  # data.py: which CSV -> H5 builder, rows per chunk, processes
}
# Former FuxiCTR names -> the key read here. FuxiCTR 2.0.0-2.0.3's FeatureMap selected features
# with ``ordered_features`` (2.0.4: ``use_features``); BARS's FmFM configs, run on a pre-2.0.1
# FuxiCTR, name the gAUC groups ``group_index``.
ALIASES = {"ordered_features": "use_features", "group_index": "group_id"}
# FuxiCTR / BARS keys that nothing in a run here reads, and where each comes from.
IGNORED_KEYS = {
    "eval_interval": "in BARS's configs for FuxiCTR 2.0.1-2.0.3; no FuxiCTR release reads it",
    "feature_config": "in the Base of FuxiCTR 2.0.4's configs; FuxiCTR does not read it",
    "debug_mode": "FuxiCTR's tuner adds a random suffix to expids with it; expids here are stable",
    "pickle_feature_encoder": "in FuxiCTR 2.0.x's Base configs; FuxiCTR 2.0.x always pickles it",
    "every_x_epochs": "FuxiCTR 1.x's evaluation interval (eval_steps here)",
    "patience": "FuxiCTR 1.x's early_stop_patience",
    "use_hdf5": "FuxiCTR 1.x: data is always H5 here",
    "workers": "FuxiCTR 1.x's num_workers",
    "partition_block_size": "FuxiCTR 1.x's data_block_size",
    "debug": "FuxiCTR 1.x's debug_mode",
}

# Model keys of FuxiCTR 2.0.x's model configs and BARS's published configs: valid where the
# model's constructor takes them; elsewhere a warning (FuxiCTR's own models ignore them too:
# BARS's xDeepFM configs set hidden_activations, which its xDeepFM never reads).
# embedding_initializer is FuxiCTR's FeatureEmbedding argument; its models never pass it on.
FUXICTR_MODEL_KEYS = frozenset("""
    embedding_initializer
    activation afn_activations afn_dropout afn_hidden_units aggregation att_dropout
    attention_activation attention_dim attention_dropout attention_hidden_activations
    attention_hidden_units attention_layers attention_output_activation attention_type
    aux_activation aux_hidden_units aux_loss_alpha aux_loss_beta aux_loss_lambda batch_norm
    bilinear_type block1_dropout block1_hidden_activations block1_hidden_units block2_dropout
    block2_hidden_activations block2_hidden_units block_type bn_only_once bottom_hidden_units
    bottom_mlp_activations bottom_mlp_dropout bottom_mlp_units bridge_type bst_sequence_field
    bst_target_field channels cin_hidden_units cin_layer_units condition_features condition_mode
    context_field conv_activation conv_batch_norm crossing_layers deep_learning_rate
    deep_optimizer dien_neg_seq_field dien_sequence_field dien_target_field din_sequence_field
    din_target_field din_use_softmax dnn_activations dnn_batch_norm dnn_dropout
    dnn_hidden_activations dnn_hidden_units emb_layernorm embedding_dim embedding_dropout
    enable_i2i_rel enable_sum_pooling enable_u2i_rel ensemble_dnn expert_hidden_units
    field_interaction_type fs1_context fs2_context fs_hidden_units gate_emb_dim gate_features
    gate_hidden_dim gate_hidden_units gate_priors generate_bias gnn_layers gru_type hash_bits
    hidden_activations hidden_dim hidden_units hypernet_config im_batch_norm im_order
    interaction_op interaction_type item_tower_activations item_tower_dropout item_tower_units
    kernel_heights layer_norm linear_type logarithmic_neurons long_sequence_field
    long_target_field low_rank mlp1_batch_norm mlp1_dropout mlp1_hidden_activations
    mlp1_hidden_units mlp2_batch_norm mlp2_dropout mlp2_hidden_activations mlp2_hidden_units
    model_structure model_type neg_seq_field net_batch_norm net_dropout net_layernorm
    new_condition_emb num_cross_layers num_experts num_hashes num_heads num_interaction_layers
    num_layers num_shared_experts num_specific_experts num_subspaces num_tasks order overparam_p
    parallel_block_dim parallel_dnn_hidden_units parallel_num_blocks pooling_sizes pos_emb_dim
    rank_k recombined_channels reduction_ratio regularizer relu_before_att residual_blocks
    residual_mode residual_type reuse_embedding reuse_graph_layer reuse_hash seq_pooling_type
    sequence_field share_embedding short_sequence_field short_target_field
    stacked_dnn_hidden_units stacked_transformer_layers target_field temperature
    top_mlp_activations top_mlp_dropout top_mlp_units topk tower_hidden_units use_attention
    use_attention_softmax use_behavior_refiner use_causal_mask use_dnn use_feature_gating
    use_field_gate use_fs use_gru use_low_rank_mixture use_pos_emb use_position_emb use_qkvo
    use_regulation_module use_residual use_scale use_wide user_tower_activations
    user_tower_dropout user_tower_units wide_learning_rate
""".split())


def init_keywords(model_class):
    """Constructor keywords of ``model_class`` and its bases (what a config may set)."""
    keys = set()
    for klass in inspect.getmro(model_class):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for name, p in inspect.signature(init).parameters.items():
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and name not in ("self", "feature_map"):
                keys.add(name)
    return keys


def apply_aliases(params):
    """Read former FuxiCTR names under the current ones (unless those are set); returns a note
    per alias that took effect."""
    notes = []
    for old, new in ALIASES.items():
        if params.get(old) is not None and params.get(new) is None:
            params[new] = params[old]
            notes.append(f"{old}: {params[old]!r} read as {new} (FuxiCTR's former name)")
    return notes


def check_keys(params, model_class):
    """Warnings (one line per FuxiCTR/BARS key nothing here reads); raises UserError on a key
    nothing knows, with the closest valid one, and on an unknown metric."""
    expid = params["model_id"]
    valid = RUNNER_KEYS | DATASET_KEYS | init_keywords(model_class) | set(ALIASES)
    warnings = []
    for key in params["_model_keys"]:
        if key in valid:
            continue
        if key in IGNORED_KEYS:
            warnings.append(f"{expid}: key {key!r} in model_config is not read here ({IGNORED_KEYS[key]}); ignored")
        elif key in FUXICTR_MODEL_KEYS:
            warnings.append(f"{expid}: key {key!r} in model_config is a FuxiCTR model key that model "
                            f"{params['model']} does not read; ignored")
        else:
            raise UserError(f"{expid}: unknown key {key!r} in model_config{suggest(key, valid)} "
                            f"(model {params['model']} does not read it)")
    for key in params["_dataset_keys"]:
        if key in IGNORED_KEYS:
            warnings.append(f"{params['dataset_id']}: key {key!r} in dataset_config is not read here "
                            f"({IGNORED_KEYS[key]}); ignored")
        elif key not in DATASET_KEYS:
            raise UserError(f"{params['dataset_id']}: unknown key {key!r} in dataset_config"
                            f"{suggest(key, DATASET_KEYS)}")
    metrics = params.get("metrics") or []
    if isinstance(metrics, str) or not isinstance(metrics, list):
        raise UserError(f"{expid}: metrics must be a list of metric names, got {metrics!r}"[:300])
    for metric in metrics + _monitor_metrics(params.get("monitor")):
        if not isinstance(metric, str) or metric not in SUPPORTED_METRICS:
            raise UserError(f"{expid}: unknown metric {metric!r} in metrics/monitor"
                            f"{suggest(metric, SUPPORTED_METRICS)} (supported: {', '.join(SUPPORTED_METRICS)})")
    return warnings


def _monitor_metrics(monitor):
    if isinstance(monitor, str):
        return [monitor]
    if isinstance(monitor, dict):
        return list(monitor)
    return []
