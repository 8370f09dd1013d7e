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


class HealthOut(BaseModel):
    status: str
    warehouse: str
    cache: str
