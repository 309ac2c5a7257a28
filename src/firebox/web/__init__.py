"""The demo's local web page: the state's towns and PSAPs on a map drawn from vector data
(no tiles, no internet), LoST lookups by click, and live counts of answered queries."""
