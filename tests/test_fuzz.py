"""Property-based fuzzing of the inputs a user hands over: every generated CSV and config is
accepted, or refused with one line; nothing raises anything else. ``benchmarks/chaos.py
--fuzz 10000`` runs the same checks on ten thousand cases."""
import tempfile

from hypothesis import HealthCheck, given, settings

from fuzz_inputs import check_config, check_csv, config_text, csv_bytes

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(csv_bytes())
def test_every_csv_is_validated_or_refused_with_one_line(data):
    with tempfile.TemporaryDirectory() as folder:
        check_csv(data, folder, "fail")
        check_csv(data, folder, "skip")


@FUZZ
@given(config_text())
def test_every_config_is_read_or_refused_with_one_line(text):
    with tempfile.TemporaryDirectory() as folder:
        check_config(text, folder)


def test_the_cases_fuzzing_found_are_refused_with_one_line():
    with tempfile.TemporaryDirectory() as folder:
        header = b"label,user_id,item_id,cate_id,item_history,cate_history,price\r\n"
        for rows in (b'0,0,0,0,,,0.0\n0,0,0,0,,,"\n"\n',):
            assert check_csv(header + rows, folder) == "refused"
            check_csv(header + rows, folder, "skip")
        for text in ("?", "Fuzz: {model: InterFormer, dataset_id: tiny_amazon, metrics: -57270084}\n",
                     "Fuzz: {model: [], dataset_id: tiny_amazon}\n",
                     "Fuzz: {model: InterFormer, dataset_id: tiny_amazon, metrics: [AUC, 3]}\n"):
            assert check_config(text, folder) == "refused"
