"""What one conversion run carries from step to step: the ModelService, its folders, the fetched source, the
data files, progress, timings and options. The pipeline builds it; the targets read and fill it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from modelservice.api.loader import LoadedModelService
from modelservice.api.models import ModelService
from modelservice.convert.external import threshold_from_env
from modelservice.convert.fetch import Fetched
from modelservice.convert.progress import Progress


@dataclass
class ConvertOptions:
    cache_dir: Path | None = None
    progress: bool = True
    use_cache: bool = True
    measure_seconds: float = 2.0  # time spent measuring each batch size when precision is auto
    # ONNX files whose initializers pass this many bytes keep their weights in an external data file beside
    # model.onnx (protobuf cannot hold more than 2 GiB); tests lower it to exercise that path on small models.
    # Default: $MODELSERVICE_EXTERNAL_DATA_THRESHOLD, else 1 GiB (convert/external.py).
    external_data_threshold: int = field(default_factory=threshold_from_env)


@dataclass
class ConvertContext:
    item: LoadedModelService
    work: Path
    staging: Path
    progress: Progress
    fetched: Fetched
    data_path: Path | None
    calibration_path: Path | None
    timings: dict[str, float]
    options: ConvertOptions

    @property
    def ms(self) -> ModelService:
        return self.item.model
