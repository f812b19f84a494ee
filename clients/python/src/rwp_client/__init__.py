"""Python client of the RWP distributed training service.

Submit a job, follow it, export its weights::

    from rwp_client import Client, JobSpec, Method, StepMetrics

    with Client("http://127.0.0.1:50051") as client:
        job = client.submit(JobSpec(method=Method.M_ARWP, epochs=2, batch_size=128), name="first")
        for event in client.watch(job):
            if isinstance(event, StepMetrics):
                print(event.step, event.loss)
        client.export(job, "weights.safetensors")

Enum fields take the job files' names too, and ``progress`` draws a bar (in
a notebook, a terminal or a log) until the job ends::

    job = client.submit(JobSpec(method="m-arwp", model="mlp", epochs=2))
    final = client.progress(job)

Sweep σ (or any job field) and pick the best trial by validation accuracy::

    spec = SweepSpec(
        base=JobSpec(method=Method.M_ARWP, model=Model.MLP, epochs=2, validation_fraction=0.2),
        search=Search(params=(SearchParam.grid("sigma", [0.003, 0.01, 0.03]),)),
        concurrency=2,
    )
    sweep = client.wait_sweep(client.create_sweep(spec, name="sigma"))
    print(sweep.best)

See the package's README for TorchScript models, TLS and tokens.
"""

from ._client import CHUNK_BYTES, Client, JobRef, ModelSource, Pem, ScriptModuleLike, SweepRef
from ._errors import (
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    RwpError,
    ServerError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from ._progress import ProgressDisplay
from ._spec import (
    BadSamples,
    BadSamplesName,
    ConstantLr,
    ConstantSigma,
    CosineIncreasingSigma,
    CosineLrPerEpoch,
    CosineLrPerUpdate,
    DataSource,
    DataSummary,
    Dataset,
    DatasetName,
    GradientEncoding,
    GradientEncodingName,
    JobSpec,
    LrSchedule,
    LrScheduleLike,
    LrScheduleName,
    Method,
    MethodName,
    Model,
    ModelFile,
    ModelName,
    NonFinitePolicy,
    NonFinitePolicyName,
    SigmaSchedule,
    SigmaScheduleLike,
    SigmaScheduleName,
    StepLr,
    Transforms,
    TransformsName,
)
from ._sweep import (
    Distribution,
    DistributionName,
    EarlyStopping,
    ParamValue,
    Search,
    SearchMode,
    SearchModeName,
    SearchParam,
    SweepSpec,
)
from ._types import (
    DataReport,
    Evaluation,
    Export,
    Job,
    JobEvent,
    JobState,
    LogEntry,
    StepMetrics,
    StoredModel,
    SplitReport,
    Sweep,
    SweepState,
    Trial,
    UnreadableSample,
    Worker,
)

__version__ = "0.1.0"

__all__ = [
    "CHUNK_BYTES",
    "AlreadyExists",
    "BadSamples",
    "BadSamplesName",
    "Cancelled",
    "Client",
    "ConstantLr",
    "ConstantSigma",
    "CosineIncreasingSigma",
    "CosineLrPerEpoch",
    "CosineLrPerUpdate",
    "DataLoss",
    "DataReport",
    "DataSource",
    "DataSummary",
    "Dataset",
    "DatasetName",
    "DeadlineExceeded",
    "Distribution",
    "DistributionName",
    "EarlyStopping",
    "Evaluation",
    "Export",
    "FailedPrecondition",
    "GradientEncoding",
    "GradientEncodingName",
    "InvalidArgument",
    "Job",
    "JobEvent",
    "JobRef",
    "JobSpec",
    "JobState",
    "LrSchedule",
    "LrScheduleLike",
    "LrScheduleName",
    "Method",
    "MethodName",
    "Model",
    "ModelFile",
    "ModelName",
    "ModelSource",
    "NonFinitePolicy",
    "NonFinitePolicyName",
    "NotFound",
    "OutOfRange",
    "ParamValue",
    "Pem",
    "PermissionDenied",
    "ProgressDisplay",
    "ResourceExhausted",
    "RwpError",
    "ScriptModuleLike",
    "Search",
    "SearchMode",
    "SearchModeName",
    "SearchParam",
    "ServerError",
    "SigmaSchedule",
    "SigmaScheduleLike",
    "SigmaScheduleName",
    "SplitReport",
    "StepLr",
    "StepMetrics",
    "StoredModel",
    "LogEntry",
    "Worker",
    "Sweep",
    "SweepRef",
    "SweepSpec",
    "SweepState",
    "Transforms",
    "TransformsName",
    "Trial",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UnreadableSample",
]

# Public classes show (and pickle) as rwp_client.X, not as their private module's.
for _name in __all__:
    _value = globals()[_name]
    if isinstance(_value, type) and _value.__module__.startswith(f"{__name__}._"):
        _value.__module__ = __name__
del _name, _value
