"""A vision model on the Models page: imported with its projector, shown as reading images, planned with it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from app.services import Services
from ui.models_page import ModelsPage
from ui.models_table import COLUMNS
from ui.tasks import TaskRunner


@pytest.fixture
def page(qtbot: QtBot, services: Services) -> ModelsPage:
    widget = ModelsPage(services, TaskRunner(synchronous=True))
    qtbot.addWidget(widget)
    widget.resize(1100, 900)
    return widget


def test_a_model_dropped_with_its_projector_reads_images_and_plans_with_it(page: ModelsPage, services: Services,
                                                                           dense_model: Path, projector: Path) -> None:
    page.import_paths([projector, dense_model], mode="in_place")
    assert page.table_model.rowCount() == 1, page.jobs.status.text()
    assert "it reads images (gemma3 projector, 16 tokens an image)" in page.jobs.status.text()
    assert page.table_model.index(0, COLUMNS.index("Architecture")).data() == "llama, reads images"
    assert "mmproj-tiny.gguf" in page.table_model.index(0, 0).data(3)  # the tooltip names its file
    view = page.plan_view
    assert "Reads images (gemma3 projector, 16 tokens an image)" in view.title.text()
    assert view.form.isRowVisible(view.vision) and view.vision.isChecked()
    plan = view.plan
    assert plan is not None and plan.projector is not None and plan.projector.tokens_per_image == 16
    assert "each image takes ~16 tokens of the context" in view.verdict.text()
    assert "Projector " in view.verdict.text()
    view.vision.setChecked(False)  # text only: the plan leaves it out, the profile says so
    assert view.plan is not None and view.plan.projector is None and "Projector" not in view.verdict.text()
    view.save_profile()
    model = services.models.all()[0]
    assert services.profile(model.id).vision is False


def test_a_projector_dropped_alone_goes_to_the_selected_model(page: ModelsPage, services: Services,
                                                              dense_model: Path, projector: Path) -> None:
    page.import_paths([projector])  # nothing selected: said in words
    assert "is a vision projector (mmproj), not a model" in page.jobs.status.text()
    page.import_paths([dense_model], mode="in_place")
    assert not services.models.all()[0].reads_images
    page.import_paths([projector], mode="in_place")
    assert services.models.all()[0].reads_images, page.jobs.status.text()
    assert "tiny-dense reads images" in page.jobs.status.text()
    assert page.table_model.index(0, COLUMNS.index("Architecture")).data() == "llama, reads images"
