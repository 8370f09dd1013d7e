"""Response models, for the OpenAPI spec (the routes serialize their answers directly)."""

from pydantic import BaseModel, Field


class MetricTypeRef(BaseModel):
    id: int
    name: str
    unit: str


class TimeStampTypeRef(BaseModel):
    id: int
    name: str


class PointOut(BaseModel):
    t: str = Field(description="Start of the window, ISO 8601 UTC")
    value: float | None = Field(description="The metric's value; null when undefined")
    requestCount: int | None = Field(description="Calls in the window")
    coveredHours: int | None = Field(
        description="Hours of the window that were read and are summed into the point (1 for "
        "an hourly point); null for a row written before coverage was recorded"
    )
    expectedHours: int | None = Field(
        description="Hours the window should hold when it was written: up to and including the "
        "running hour (24 for a closed day, 168 for a closed week)"
    )
    complete: bool = Field(
        description="coveredHours equals expectedHours; false for a partial point (some hours "
        "not read yet, e.g. a busy shard) or an unknown coverage"
    )


class MetricSeries(BaseModel):
    billerId: int
    metricType: MetricTypeRef
    timeStampType: TimeStampTypeRef
    model_config = {"populate_by_name": True}
    from_: str = Field(alias="from", description="Start of the range (inclusive), ISO 8601 UTC")
    to: str = Field(description="End of the range (exclusive), ISO 8601 UTC")
    points: list[PointOut]
    continuationToken: str | None = Field(
        description="Pass back as continuationToken for the next page; null on the last page"
    )


class MetricTypeOut(BaseModel):
    id: int
    name: str
    unit: str
    description: str | None


class TimeStampTypeOut(BaseModel):
    id: int
    name: str
    hierarchyLevel: int


class BillersOut(BaseModel):
    billers: list[int]
    names: dict[str, str] = Field(
        description="BillerId -> the catalog's BillerName, for the billers that have one"
    )


class HealthOut(BaseModel):
    status: str
    warehouse: str
    cache: str


class ExportPage(BaseModel):
    """One page of an export (format=json); format=csv sends the same rows as text/csv."""

    objectName: str
    taskId: str = Field(description="The export task (see /api/v2/exports-status/{task_id})")
    page: int = Field(description="1 for the first page")
    rowCount: int
    continuationToken: str | None = Field(
        description="Send it back (query parameter or continuation-token header) for the next "
        "page; null on the last page"
    )
    rows: list[dict] = Field(description="The rows, one object per row, columns by name")


class _Tracker(BaseModel):
    elapsed_time: str = Field(description="Time since the task's last event or request")
    last_activity: str = Field(description="The last event or request (UTC)")


INITIATED = "When the first page was asked (UTC)"


class ActivityTracker(_Tracker):
    initiated_time: str = Field(description=INITIATED)


class QueryConfig(BaseModel):
    filter_params: dict = Field(description="fromDate, toDate, billers, pageSize, format")
    object_name: str


class ExportEvent(BaseModel):
    event: str
    at: str


class _WithEvents(BaseModel):
    events: list[ExportEvent] | None = Field(
        default=None, description="Every event in order (single-task answers only)"
    )


class ExportTask(_WithEvents):
    task_id: str
    queue: str = Field(description="active, completed, draining or stale")
    accumulate: int = Field(description="Rows served so far")
    metric: int | None = Field(description="Rows on the latest page served")
    activity_tracker: ActivityTracker
    query_config: QueryConfig
    status: str | None = Field(description="The latest event")
    message: str | None
    pages_served: int
    pages_fetched: int
    pages_total: int | None = Field(
        default=None, description="How many pages the export has, once its end is known"
    )
    cached_bytes: int


class ExportQueues(BaseModel):
    active: list[ExportTask]
    completed: list[ExportTask]
    draining: list[ExportTask]
    stale: list[ExportTask]


class SeedActivityTracker(_Tracker):
    """Seed 003's spelling (``initated_time``, sic) and format (``2019-05-02 10:39:36.560855``)."""

    initated_time: str = Field(description=INITIATED)


class SeedFilterParams(BaseModel):
    fromDate: str = Field(description="Rows from this time, `2018-01-26 00:00:00` (UTC)")
    toDate: str = Field(description="Rows before this time, `2020-07-02 00:00:00` (UTC)")


class SeedQueryConfig(BaseModel):
    filter_params: SeedFilterParams
    object_name: str


class BiviewsTask(_WithEvents):
    """One task as seed 003 shows it."""

    accumulate: int = Field(description="Rows served so far")
    activity_tracker: SeedActivityTracker
    message: str | None
    metric: int | None = Field(description="Rows on the latest page served")
    query_config: SeedQueryConfig
    status: str | None = Field(description="The latest event")
    task_id: str = Field(
        description="The continuation token issued with the first page; the export's task id "
        "(the Export-Task-Id header) names the same task in the URLs"
    )


class BiviewsQueues(BaseModel):
    active: list[BiviewsTask]
    completed: list[BiviewsTask]
    draining: list[BiviewsTask]
    stale: list[BiviewsTask]


class BurnAlertOut(BaseModel):
    name: str = Field(description="page (severity ERROR) or ticket (WARN)")
    severity: str
    factor: float = Field(description="Burn rate both windows must reach to fire")
    long: int = Field(description="Long window in seconds, as the hourly rows read it")
    short: int = Field(description="Short window in seconds, as the hourly rows read it")
    longBurn: float | None = Field(description="Burn rate over the long window; null unknown")
    shortBurn: float | None
    longRequests: int = Field(description="Requests of the read hours of the long window")
    gated: bool = Field(description="Fewer requests than minRequests: never fires")
    firing: bool


class RateObjectiveOut(BaseModel):
    objective: float = Field(description="Allowed share of calls (0.01 = 1 %)")
    requests30d: int = Field(description="Calls of the read hours of the 30-day budget window")
    bad30d: int = Field(description="Failed (or timed-out) calls among them")
    coveredHours30d: int = Field(description="Hours of the 30 days that were read")
    expectedHours30d: int
    budgetRemaining: float | None = Field(
        description="Share of the 30-day error budget left: 1 untouched, 0 spent, < 0 "
        "overspent; null without calls"
    )
    alerts: list[BurnAlertOut]
    state: str = Field(description="page, ticket, ok, not enough traffic or unknown")
    severity: str | None
    why: str


class P95ObjectiveOut(BaseModel):
    objectiveMs: float
    p95Ms: float | None = Field(description="P95 of the evaluated hour; null when not read")
    requests: int | None = Field(description="Calls with a response time in that hour")
    hoursOver: int = Field(description="Read hours of the window over the objective")
    hoursRead: int
    hoursWindow: int
    state: str = Field(description="ticket, ok, not enough traffic or unknown")
    severity: str | None
    why: str


class ObjectivesOut(BaseModel):
    errorRate: float | None
    timeoutRate: float | None
    p95Ms: float | None


class BillerObjectivesOut(BaseModel):
    billerId: int
    at: str = Field(description="End of the hour the objectives are judged at, ISO 8601 UTC")
    minRequests: int = Field(description="METRICS_OBJECTIVE_MIN_REQUESTS")
    objectives: ObjectivesOut | None = Field(description="The BillerObjective row; null: none")
    invalid: str | None = Field(description="Why the biller's row is not a valid objective")
    errorRate: RateObjectiveOut | None
    timeoutRate: RateObjectiveOut | None
    p95: P95ObjectiveOut | None
    state: str = Field(
        description="page, ticket, ok, not enough traffic, unknown, no objective or invalid"
    )
    severity: str | None = Field(description="ERROR (a page), WARN (a ticket) or null")
    why: str
