"""Computer-aided dispatch: incidents, units, unit recommendation, EIDO export.

``model`` is the sans-I/O domain (records, states, transition tables; time is an argument),
``service`` the CAD functional element over a repository (memory or SQLite), ``eido`` the
NENA-STA-021 export, ``app`` the JSON API the console drives, ``data`` the loaders of the
tables the CAD is given (fire alarm boxes, units placed at stations).
"""
