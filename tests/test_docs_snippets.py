"""Every ```python block of README.md and docs/*.md runs, and docs/configuration.md lists the code's default priors."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
# Pages for developers whose python blocks are interface sketches (dataclass fields
# with ``...`` bodies), not runnable examples.
_NOT_EXAMPLES = {"architecture.md"}
_FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _snippets():
    pages = [DOCS.parent / "README.md"] + sorted(p for p in DOCS.glob("*.md") if p.name not in _NOT_EXAMPLES)
    for page in pages:
        for n, block in enumerate(_FENCE.findall(page.read_text()), 1):
            yield pytest.param(block, id=f"{page.name}-{n}")


@pytest.mark.parametrize("code", list(_snippets()))
def test_docs_snippet_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<docs snippet>", "exec"), {"__name__": "__docs__"})


def test_every_page_has_a_snippet_or_is_prose():
    assert len(list(_snippets())) >= 4


# Configurations whose default priors together cover every component of the model.
_COMPONENT_CONFIGS = (
    [{"sfh": s} for s in ("constant", "exponential", "delayed", "lognormal", "dpl", "burst")]
    + [{"sfh": {"family": "continuity", "n_bins": 3}}, {"sfh": {"family": "stochastic", "n_grid": 4}}]
    + [{"dust": d} for d in ("calzetti", "cf00", "kc13", "smc", "cardelli89", "salim18")]
    + [{"dust_emission": True}, {"dust_emission": "mbb"}, {"agn": True}, {"radio": True},
       {"xray": True}, {"shock": True}]
)
_INDEXED = [(re.compile(r"^log_sfr_ratio_\d+$"), "log_sfr_ratio_<i>"),
            (re.compile(r"^psd_xi_\d+$"), "psd_xi_<k>")]


def _doc_name(name: str) -> str:
    for pattern, shown in _INDEXED:
        if pattern.match(name):
            return shown
    return name


@pytest.mark.parametrize("model_settings", _COMPONENT_CONFIGS, ids=str)
def test_configuration_page_lists_default_priors(model_settings):
    from tengri.model.config import model_from_config

    text = (DOCS / "configuration.md").read_text()
    cfg = {"model": model_settings, "data": {"filters": ["sdss_r0"]}, "params": {"redshift": {"fixed": 1.0}}}
    model, _ = model_from_config(cfg)
    missing = [f"| `{_doc_name(n)}` | `{p!r}` |" for n, p in model.default_priors().items()
               if f"| `{_doc_name(n)}` | `{p!r}` |" not in text]
    assert not missing, f"docs/configuration.md lacks rows: {missing}"


def test_configuration_page_names_every_model_key():
    from tengri.model import config

    text = (DOCS / "configuration.md").read_text()
    assert [k for k in sorted(config._MODEL_KEYS) if f"\n{k} = " not in text] == []
