"""hf-longctx export / push: a Hub-ready folder that reloads, a filled card, and pushes that stop at HfApi."""

import json
import subprocess
import sys

import pytest
import torch
from test_longformer_model import make_config
from transformers import AutoModelForSequenceClassification

from hf_longctx import LongctxLongformerForSequenceClassification
from hf_longctx.__main__ import main
from hf_longctx.export import SUMMARY_FILE, ExportError, export_model
from hf_longctx.push import PushError, push_folder


@pytest.fixture
def trained(tmp_path):
    torch.manual_seed(0)
    model = LongctxLongformerForSequenceClassification(make_config(num_labels=3)).eval()
    folder = tmp_path / "trained"
    model.save_pretrained(folder)
    summary = {
        "training": "3 epochs on kernel docs, lr 3e-4",
        "results": [{"task": "text-classification", "dataset": "kernel_docs", "split": "test",
                     "metric": "accuracy", "value": 0.8125}],
    }
    (folder / SUMMARY_FILE).write_text(json.dumps(summary))
    return model, folder


def test_export_writes_a_folder_that_reloads_with_a_filled_card(trained, tmp_path):
    model, folder = trained
    out = export_model(folder, tmp_path / "hub", repo_id="someone/tiny-longformer")
    loaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    ids = torch.randint(3, 99, (2, 21), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    card = (out / "README.md").read_text()
    assert "pipeline_tag: text-classification" in card
    assert "| text-classification | kernel_docs | test | accuracy | 0.8125 |" in card
    assert 'repo = "someone/tiny-longformer"' in card
    assert "AutoModelForSequenceClassification.from_pretrained(repo, trust_remote_code=True)" in card
    # No tokenizer in this folder: the snippet says so instead of loading one, and gives the model's length.
    assert "AutoTokenizer" not in card and "No tokenizer was saved" in card
    assert f"max_length={model.config.max_input_tokens} tokens" in card
    assert "datasets:" not in card.split("---")[1]  # the metadata names no local data set
    assert "attention window [4, 8]" in card
    assert (out / "modeling_longformer.py").is_file() and (out / "sliding_window_attention.py").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hub")], "staging folder left behind"


def test_export_refuses_to_overwrite_and_names_bad_folders(trained, tmp_path):
    _, folder = trained
    out = tmp_path / "hub"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    with pytest.raises(ExportError, match="already exists"):
        export_model(folder, out)
    assert (out / "mine.txt").read_text() == "user data"
    with pytest.raises(ExportError, match="no config.json"):
        export_model(tmp_path / "nowhere", tmp_path / "x")
    # --overwrite must not delete a folder export never wrote (the user's file would be lost)
    with pytest.raises(ExportError, match="mine.txt"):
        export_model(folder, out, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "user data"
    with pytest.raises(ExportError, match="holds the model folder"):
        export_model(folder, folder, overwrite=True)
    # A file where a folder must go was a FileExistsError traceback.
    with pytest.raises(ExportError, match="mine.txt is a file, not a folder"):
        export_model(folder, out / "mine.txt" / "hub")


def test_export_overwrite_replaces_only_its_own_unchanged_folder(trained, tmp_path):
    _, folder = trained
    out = export_model(folder, tmp_path / "hub")
    export_model(folder, out, overwrite=True)  # its own, unchanged: replaced
    assert (out / "config.json").is_file()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="files it did not write: notes.txt"):
        export_model(folder, out, overwrite=True)
    (out / "notes.txt").unlink()
    (out / "README.md").write_text("my own card")
    with pytest.raises(ExportError, match="files changed since: README.md"):
        export_model(folder, out, overwrite=True)
    assert (out / "README.md").read_text() == "my own card"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hub")], "staging folder left behind"


def test_exported_tokenizer_knows_the_model_length(tmp_path):
    """A tokenizer saved with model_max_length 1e30 made pipeline(..., truncation=True) fail on long text."""
    from transformers import pipeline

    from hf_longctx.data.tokenizers import kernel_docs_bpe

    tokenizer = kernel_docs_bpe()
    torch.manual_seed(0)
    config = make_config(num_labels=2, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    model = LongctxLongformerForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path / "trained")
    tokenizer.save_pretrained(tmp_path / "trained")
    out = export_model(tmp_path / "trained", tmp_path / "hub")
    saved = json.loads((out / "tokenizer_config.json").read_text())
    assert saved["model_max_length"] == config.max_input_tokens
    # Loading arguments transformers writes back would make the Hub copy load offline-only.
    assert not {"is_local", "local_files_only"} & set(saved), sorted(saved)
    card = (out / "README.md").read_text()  # its snippet loads the tokenizer and cuts inputs at the model's length
    # Without trust_remote_code, AutoTokenizer (which reads the remote-code config) stops at an interactive prompt.
    assert "tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True)" in card
    assert f"truncation=True, max_length={config.max_input_tokens}," in card
    snippet = card.split("```python\n")[1].split("```")[0].replace("PATH_OR_REPO", str(out))
    scope = {}
    exec(snippet, scope)  # the card's own code runs, on the exported folder
    assert scope["outputs"].logits.shape == (1, 2)
    classify = pipeline("text-classification", model=str(out))
    assert len(classify("a long document " * 2000, truncation=True)) == 1


def test_export_cli_exit_codes(trained, tmp_path, capsys):
    _, folder = trained
    assert main(["export", str(folder), str(tmp_path / "hub")]) == 0
    assert main(["export", str(folder), str(tmp_path / "hub")]) == 1
    assert "already exists" in capsys.readouterr().err


class _RecordingApi:
    def __init__(self, fail=None):
        self.calls, self.fail = [], fail

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        if self.fail:
            raise self.fail
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        return type("Info", (), {"commit_url": f"https://hub.example/{kwargs['repo_id']}/commit/1"})()


def test_push_uploads_one_commit_through_hfapi(trained, tmp_path, monkeypatch):
    _, folder = trained
    out = export_model(folder, tmp_path / "hub")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    api = _RecordingApi()
    url = push_folder(out, "someone/tiny", token="hf_test", api=api)
    assert url.endswith("someone/tiny/commit/1")
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[1][2]["folder_path"] == str(out) and api.calls[1][2]["token"] == "hf_test"
    assert api.calls[1][2]["ignore_patterns"] == [".hf_longctx_written.json"]  # bookkeeping stays local


def test_push_options_commit_message_branch_private(trained, tmp_path, monkeypatch):
    _, folder = trained
    out = export_model(folder, tmp_path / "hub")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    api = _RecordingApi()
    api.create_branch = lambda repo_id, **kwargs: api.calls.append(("create_branch", repo_id, kwargs))
    push_folder(out, "someone/tiny", token="hf_test", api=api, private=True, revision="v2", commit_message="Retrain")
    assert [c[0] for c in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][2]["private"] is True and api.calls[1][2]["branch"] == "v2"
    assert api.calls[2][2]["revision"] == "v2" and api.calls[2][2]["commit_message"] == "Retrain"


def test_push_dry_run_lists_the_files_without_token_or_network(trained, tmp_path, monkeypatch, capsys):
    _, folder = trained
    out = export_model(folder, tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("hf_longctx.push.get_token", lambda: None)
    assert main(["push", str(out), "someone/tiny", "--dry-run", "--revision", "v2"]) == 0
    listed = capsys.readouterr().out
    assert "would upload to someone/tiny (branch v2)" in listed
    assert "  config.json" in listed and "  README.md" in listed and "  model.safetensors" in listed
    assert ".hf_longctx_written.json" not in listed
    assert main(["push", str(out), "not a repo", "--dry-run"]) == 1
    assert "is not a Hub repository id" in capsys.readouterr().err
    # A card exported for one repository and pushed to another: its snippet would load the first, so say so.
    named = export_model(folder, tmp_path / "named", repo_id="someone/tiny")
    assert main(["push", str(named), "someone/tiny", "--dry-run"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["push", str(named), "someone/other", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "the card in" in err and "loads 'someone/tiny', not 'someone/other'" in err


def test_train_push_to_hub_is_checked_before_training_then_pushes(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("hf_longctx.push.get_token", lambda: None)
    fast = ["--task", "kernel-docs", "--preset", "tiny", "--max-length", "64", "--max-steps", "1", "--batch-size", "2",
            "--max-train-samples", "2", "--max-eval-samples", "2", "--set", "disable_tqdm=true", "--set",
            "eval_strategy=no", "--set", "save_strategy=no"]
    assert main(["train", *fast, "--output-dir", str(tmp_path / "run"), "--push-to-hub", "someone/kd"]) == 1
    assert "--push-to-hub: no Hugging Face token" in capsys.readouterr().err and not (tmp_path / "run").exists()

    api = _RecordingApi()
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("hf_longctx.push.HfApi", lambda: api)
    assert main(["train", *fast, "--output-dir", str(tmp_path / "run"), "--push-to-hub", "someone/kd"]) == 0
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[1][2]["folder_path"] == str(tmp_path / "run" / "hub")
    assert 'repo = "someone/kd"' in (tmp_path / "run" / "hub" / "README.md").read_text()


def test_push_fails_clearly_without_token_network_or_export(trained, tmp_path, monkeypatch):
    _, folder = trained
    out = export_model(folder, tmp_path / "hub")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("hf_longctx.push.get_token", lambda: None)
    with pytest.raises(PushError, match="no Hugging Face token"):
        push_folder(out, "someone/tiny", api=_RecordingApi())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PushError, match="HF_HUB_OFFLINE"):
        push_folder(out, "someone/tiny", token="hf_test", api=_RecordingApi())
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(PushError, match="ConnectionError.*no commit was made"):
        push_folder(out, "someone/tiny", token="hf_test", api=_RecordingApi(fail=ConnectionError("unreachable")))
    with pytest.raises(PushError, match="not an exported model folder"):
        push_folder(folder.parent / "missing", "someone/tiny", token="hf_test")


def test_push_command_exits_non_zero_without_token(trained, tmp_path):
    _, folder = trained
    out = export_model(folder, tmp_path / "hub")
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}  # no saved login either
    result = subprocess.run([sys.executable, "-m", "hf_longctx", "push", str(out), "someone/tiny"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert "hf-longctx push: no Hugging Face token" in result.stderr and "Traceback" not in result.stderr
