"""The monitor (firebox issue 6): synthetic i3 test calls from every ingress to every PSAP
(``probes``), passive watching of the i3 log events and states (``watch``), an outage
detector (``detector``), notification by webhook and e-mail (``notify``), an HTTP view with
Prometheus metrics (``http``), composed by ``service.Monitor``."""

from firebox.monitor.detector import Detector, DetectorConfig, Outage, OutageScope, OutageState, OutageUpdate
from firebox.monitor.notify import Notifier, NotifyConfig
from firebox.monitor.probes import Ingress, ProbePlanner, ProbeResult, ProbeRunner, ProbeTarget
from firebox.monitor.service import Monitor, MonitorConfig, config_from_node
from firebox.monitor.watch import Figures, Watch

__all__ = [
    "Detector", "DetectorConfig", "Figures", "Ingress", "Monitor", "MonitorConfig", "Notifier", "NotifyConfig",
    "Outage", "OutageScope", "OutageState", "OutageUpdate", "ProbePlanner", "ProbeResult", "ProbeRunner",
    "ProbeTarget", "Watch", "config_from_node",
]
