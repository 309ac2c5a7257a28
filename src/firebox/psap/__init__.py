"""PSAP side of a 911 call. Today: ``ua``, a simple SIP user agent per PSAP queue (answers,
rings, hangs up, or plays busy/silent for fault demos), with its SDP answerer ``sdp``. The
PSAP call-handling element (queues, ACD, call-taker console) grows out of it."""

from firebox.psap.ua import AgentMode, PsapAgentCore, PsapAgents, Queue, QueueCounts

__all__ = ["AgentMode", "PsapAgentCore", "PsapAgents", "Queue", "QueueCounts"]
