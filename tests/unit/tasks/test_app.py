"""The app contract validates what an app declares: its lesions are among its labels."""

from __future__ import annotations

import pytest

from labelloop.tasks import App, AppLoadError, load_app
from tests.support.servers import APP_DIR

LABELS = {"background": 0, "liver": 1, "lesion": 5}


def test_lesions_are_labels_of_the_app() -> None:
    app = App(name="a", description="d", version="1", labels=LABELS, lesions=frozenset({"lesion"}))
    assert app.lesions == {"lesion"}
    assert App(name="a", description="d", version="1", labels=LABELS).lesions == frozenset()


@pytest.mark.parametrize("lesions", [frozenset({"tumour"}), frozenset({"background"})])
def test_a_lesion_that_is_no_label_or_the_background_is_refused(lesions: frozenset[str]) -> None:
    with pytest.raises(AppLoadError, match="lesions"):
        App(name="a", description="d", version="1", labels=LABELS, lesions=lesions)


def test_lesions_must_be_a_frozenset_of_names() -> None:
    with pytest.raises(AppLoadError, match="frozenset"):
        App(name="a", description="d", version="1", labels=LABELS, lesions="lesion")  # type: ignore[arg-type]


def test_the_radiology_app_declares_its_lesion_label() -> None:
    app = load_app(APP_DIR)
    assert app.lesions == {"lesion"} and app.labels["lesion"] == 5
