"""The one-page night report: a pure data model (:mod:`detector.reporting.report`), loading it from InfluxDB
or a scored file (:mod:`detector.reporting.data`), and drawing it with matplotlib (:mod:`detector.reporting.render`)."""
