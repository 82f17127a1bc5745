"""FuxiCTR 2.0.4's ``FeatureProcessor`` with two fixes; both builders pickle this class.

The pickled processor is what ``predict.py`` (and FuxiCTR code) use to encode new rows, so
the FuxiCTR build and the streaming build (:mod:`interformer_fuxi.stream_build`) store the
same class with equivalent tokenizers and normalizers.
"""
from fuxictr.preprocess import FeatureProcessor
from fuxictr.preprocess.utils import Normalizer


class FittedNormalizer(Normalizer):
    """FuxiCTR 2.0.4's ``Normalizer`` with the ``transform`` its processor calls.

    FuxiCTR 2.0.4's ``FeatureProcessor.transform`` calls ``normalizer.transform``, which its
    ``Normalizer`` lacks (it has ``normalize``): every ``normalizer`` config fails there.
    """

    def transform(self, values):
        return self.normalize(values)


class SourceFirstFeatureProcessor(FeatureProcessor):
    """FuxiCTR's ``FeatureProcessor``, with empty string cells filled before ``copy_from``,
    and numeric normalizers that can transform.

    FuxiCTR preprocesses columns in reverse config order, so ``pos_items_emb:
    copy_from(pos_items)`` copies ``pos_items`` before its empty cells (NaN) become "", and
    the copy turns them into the token "nan" (an out-of-vocabulary id where the source has
    none). Filling the string columns first keeps a derived column equal to its source.
    """

    def preprocess(self, ddf):
        for col in self.label_cols + self.feature_cols:
            name = col["name"]
            if name in ddf.columns and col.get("dtype") in ("str", str) and ddf[name].isnull().values.any():
                ddf[name] = self._fill_na_(col, ddf[name])
        return super().preprocess(ddf)

    def fit_numeric_col(self, col, col_values):
        super().fit_numeric_col(col, col_values)
        normalizer = self.processor_dict.get(col["name"] + "::normalizer")
        if normalizer is not None:
            normalizer.__class__ = FittedNormalizer
