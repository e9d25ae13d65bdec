"""The time-series path: points -> TSAutoBuffer -> Gorilla blocks -> query."""

from pipeline.ts.buffer import SeriesBatch, TSAutoBuffer, TSBufferStats
from pipeline.ts.point import DataPoint, series_key
from pipeline.ts.producer import TSProducer
from pipeline.ts.reader import SeriesPoints, query

__all__ = [
    "DataPoint",
    "SeriesBatch",
    "SeriesPoints",
    "TSAutoBuffer",
    "TSBufferStats",
    "TSProducer",
    "query",
    "series_key",
]
