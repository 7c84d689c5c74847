print(
    "nanostrain session ({}): catalog {}\n  devices: {}\n  plans:   {}\n"
    "  e.g. RE(alignment_scan(cam, sx, -1, 1, 21, monitor=i0)); catalog[-1]; db[-1].table()".format(
        "simulated" if os.environ.get("NANOSTRAIN_BEAMLINE_CONFIG") is None else "EPICS",
        session.server.uri if session.server else os.environ.get("NANOSTRAIN_CATALOG"),
        ", ".join(sorted(session.devices)),
        ", ".join(sorted(session.plans)),
    )
)
