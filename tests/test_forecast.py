"""Sequence forecasting: CSV series, the split and its standardisation, the forecaster (one step, rolling
forward, scores against the naive forecast), and train-rnn --task forecast → evaluate → forecast through
the real app, resumable like every run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from seqtool.data.series import Split, read_series
from seqtool.errors import InputError
from seqtool.models import load_model
from seqtool.models.forecaster import Forecaster, ForecasterConfig
from seqtool.training.forecast import forecast_scores


def sine_csv(n: int = 240) -> str:
    return "t,value,other\n" + "".join(f"{t},{math.sin(t / 3) + 0.1 * math.cos(t):.5f},x\n" for t in range(n))


def test_read_series_header_column_and_errors(tmp_text):
    path = str(tmp_text("t,a,b\n0,1.5,2\n1,2.5,3\n\n2,-1e3,4\n"))
    assert read_series([path], "a").values == [1.5, 2.5, -1000.0]
    series = read_series([path])  # the last column; the first row is a header (not a number)
    assert series.values == [2.0, 3.0, 4.0] and series.column == "b"
    bare = str(tmp_text("0.5\n1\n2.25\n", name="bare.txt"))  # one number a line, no header
    assert read_series([bare]).values == [0.5, 1.0, 2.25] and read_series([bare]).column == "column 1"
    with pytest.raises(InputError, match=r"has no column 'c' \(its first row: t, a, b\)"):
        read_series([path], "c")
    bad = str(tmp_text("t,a\n0,1\n1,oops\n", name="bad.csv"))
    with pytest.raises(InputError, match=r"bad.csv, row 3: 'oops' in 'a' is not a number"):
        read_series([bad], "a")
    with pytest.raises(InputError, match="row 3: '' in 'a'"):
        read_series([str(tmp_text("t,a\n0,1\n1,\n", name="gap.csv"))], "a")
    with pytest.raises(InputError, match="holds no numbers"):
        read_series([str(tmp_text("t,a\n", name="empty.csv"))])


def test_the_split_standardises_with_the_training_part_only():
    values = [float(v) for v in range(10)] + [100.0, 200.0]
    split = Split.of(values, 1 / 6, window=3)
    assert split.train == values[:10] and split.valid == [100.0, 200.0]
    assert split.mean == 4.5 and split.std == pytest.approx(math.sqrt(8.25))  # not moved by the tail
    assert Split.of([1.0] * 5, 0.0, 2).std == 1.0  # a constant series stays finite
    with pytest.raises(InputError, match="too short: 4 training values give no window of 4"):
        Split.of([1.0] * 5, 0.2, 4)


def tiny(window: int = 6, mean: float = 0.0, std: float = 1.0) -> Forecaster:
    torch.manual_seed(0)
    cfg = ForecasterConfig(cell="gru", n_layers=1, hidden=8, dropout=0.0)
    return Forecaster(cfg, window, mean, std).eval()


def test_scores_against_the_naive_forecast_by_hand():
    model = tiny(window=3, mean=2.0, std=4.0)
    with torch.no_grad():  # predicts the training mean (z = 0) whatever it reads
        model.out.weight.zero_()
        model.out.bias.zero_()
    context, tail = [1.0, 2.0, 3.0], [5.0, 4.0, 10.0]
    scores = forecast_scores(model, context, tail, batch_size=2)
    mse = sum((v - 2.0) ** 2 for v in tail) / 3  # the model's error, in the series' units
    naive = ((5 - 3) ** 2 + (4 - 5) ** 2 + (10 - 4) ** 2) / 3  # x̂_t = x_{t−1}
    assert scores["mse"] == pytest.approx(mse) and scores["loss"] == pytest.approx(mse / 16)
    assert scores["naive_mse"] == pytest.approx(naive) and scores["rmse"] == pytest.approx(math.sqrt(mse))
    assert scores["skill"] == pytest.approx(1 - mse / naive) and scores["values"] == 3


def test_forecast_rolls_forward_on_its_own_predictions_and_round_trips():
    model = tiny(window=4, mean=1.0, std=2.0)
    history = torch.tensor([0.0, 1.0, 3.0, 2.0, 5.0, 4.0])
    out = model.forecast(history, 3)
    seen = list(history)
    for value in out:  # each value: the window before it, in the series' units, standardised by the model
        z = (torch.tensor(seen[-4:]) - 1.0) / 2.0
        with torch.no_grad():
            assert float(model.next_value(z[None]) * 2.0 + 1.0) == pytest.approx(float(value), abs=1e-5)
        seen.append(value)
    rebuilt = load_model(json.loads(json.dumps(model.arch())))
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt.eval().forecast(history, 3), out)
    with pytest.raises(InputError, match="for forecasting"):
        ForecasterConfig(cell="ugrnn")


def test_the_relu_rnn_learns_a_sine_better_than_the_naive_forecast():
    """The lectures' example: windows → next value with the MSE; a sine sampled every 0.5 rad."""
    values = [math.sin(t / 2) for t in range(300)]
    split = Split.of(values, 0.2, window=12)
    torch.manual_seed(0)
    model = Forecaster(ForecasterConfig(cell="rnn-relu", n_layers=1, hidden=16, dropout=0.0), 12, split.mean,
                       split.std)
    z = split.standardised(split.train)
    inputs = z.unfold(0, 12, 1)[:-1]  # (N, 12)
    targets = z[12:]
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        loss = model({"inputs": inputs, "targets": targets})[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    scores = forecast_scores(model.eval(), split.train, split.valid)
    assert scores["skill"] > 0.9, scores  # 1 − mse / naive mse


def ok(result) -> None:
    assert result.exit_code == 0, result.stderr or result.stdout


TINY = ["--task", "forecast", "--column", "value", "--cell", "gru", "--hidden", "8", "--n-layers", "1",
        "--dropout", "0", "--window", "6", "--batch-size", "8", "--valid-fraction", "0.1",
        "--eval-every", "4", "--set", "run.checkpoint_every=4", "--device", "cpu"]


def test_train_evaluate_forecast_and_resume_from_the_command_line(cli, tmp_text, tmp_path):
    csv = tmp_text(sine_csv(), name="sine.csv")
    ok(cli(["train-rnn", csv, "-w", tmp_path / "whole", "--max-steps", "8", *TINY]))
    ok(cli(["train-rnn", csv, "-w", tmp_path / "parts", "--max-steps", "4", *TINY]))
    resumed = cli(["train-rnn", csv, "-w", tmp_path / "parts", "--max-steps", "8", *TINY])
    ok(resumed)
    assert "resumed from step-0000004" in resumed.stderr
    assert "held-out MSE" in resumed.stderr and "naive last-value forecast" in resumed.stderr
    ckpt = "checkpoints/step-0000008/model.safetensors"
    a, b = load_file(tmp_path / "whole" / ckpt), load_file(tmp_path / "parts" / ckpt)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ws = tmp_path / "whole"
    arch = json.loads((ws / "model.json").read_text())
    train = [math.sin(t / 3) + 0.1 * math.cos(t) for t in range(216)]  # 240 values, the last 24 held out
    assert arch["model"] == "forecaster" and arch["mean"] == pytest.approx(sum(train) / 216, abs=1e-4)
    # evaluate: the held-out tail, as validation scored it
    result = cli(["evaluate", "-w", ws, "--json"])
    ok(result)
    scores = json.loads(result.stdout)["model"]
    best = [json.loads(line) for line in (ws / "metrics.jsonl").read_text().splitlines()]
    valid = [e for e in best if e.get("event") == "valid"]
    assert scores["values"] == 24 and any(e["mse"] == pytest.approx(scores["mse"]) for e in valid)
    trained = [e for e in best if e.get("event") == "train"]
    assert trained and not any("ppl" in e for e in trained)  # exp(MSE) is no perplexity
    table = cli(["evaluate", "-w", ws]).stdout
    assert "naive" in table and "skill" in table
    # forecast: N values after the series' end, the model's own roll-forward
    result = cli(["forecast", "-w", ws, "--steps", "5", "--json"])
    ok(result)
    model = load_model(arch)
    model.load_state_dict(load_file(ws / "model.safetensors"))
    series = [float(v.split(",")[1]) for v in sine_csv().splitlines()[1:]]
    expected = model.eval().forecast(torch.tensor(series[-6:]), 5)
    assert json.loads(result.stdout)["forecast"] == pytest.approx(expected.tolist(), abs=1e-4)
    lines = cli(["forecast", "-w", ws, "-n", "3", "--history", csv]).stdout.splitlines()
    assert [float(v) for v in lines] == pytest.approx(expected[:3].tolist(), abs=1e-4)
    # what a forecaster is not: a text model
    for argv, message in ((["generate", "-w", ws], "holds a rnn-forecast model"),
                          (["embeddings", "-w", ws, "--neighbours", "x"], "has no token embedding")):
        result = cli(argv)
        assert result.exit_code == 2 and message in result.stderr, result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--task", "forecast", "--tie"], "--tie does not apply to --task forecast"),
    (["--task", "forecast", "--column", "nope"], "has no column 'nope'"),
    (["--column", "value"], "--column applies to --task forecast only"),
    (["--task", "forecast", "--cell", "ugrnn"], "model.cell must be one of rnn, rnn-relu, gru, lstm"),
    (["--task", "forecast", "--column", "value", "--window", "500"], "the series is too short"),
    (["--task", "forecast"], "row 2: 'x' in 'other' is not a number"),
    (["--task", "forecast", "--column", "value", "--data-store", "st"], "--data-store (data.store) is for"),
])
def test_train_errors_are_one_line(cli, tmp_text, tmp_path, args, message):
    csv = tmp_text(sine_csv(60), name="sine.csv")
    result = cli(["train-rnn", csv, "-w", tmp_path / "ws", "--max-steps", "2", "--device", "cpu", *args])
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert sum(line.startswith("error:") for line in result.stderr.splitlines()) == 1


def test_forecast_needs_a_forecasting_workspace(cli, tmp_text, tmp_path):
    text = tmp_text("abc abd\n" * 40)
    ok(cli(["train-rnn", text, "-w", tmp_path / "lm", "--hidden", "8", "--n-layers", "1", "--max-steps", "1",
            "--bptt", "8", "--batch-size", "2", "--device", "cpu"]))
    result = cli(["forecast", "-w", tmp_path / "lm"])
    assert result.exit_code == 2
    assert "holds a rnn-lm model, which cannot be used for forecasting" in result.stderr
    result = cli(["forecast", "-w", tmp_path / "lm", "--steps", "0"])
    assert result.exit_code == 2 and "--steps must be ≥ 1" in result.stderr
