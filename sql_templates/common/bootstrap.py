# Prepended to every ctq PL/Python function: load ctq/indb.py from ctq.server_code into GD once per
# backend (and again after `ctq install` ships a new version: the sha below changes).
ctq = GD.get("ctq.indb")
if ctq is None or ctq.SOURCE_SHA != "{{indb_sha}}":
    import sys, types, linecache
    for _row in reversed(plpy.execute("SELECT jsonb_array_elements_text(value) AS p FROM ctq.meta WHERE key = 'python_path'")):
        if _row["p"] not in sys.path:
            sys.path.insert(0, _row["p"])
    _src = plpy.execute("SELECT sha, source FROM ctq.server_code WHERE name = 'indb'")
    if not _src:
        plpy.error("ctq server code is missing: run `ctq install`")
    ctq = types.ModuleType("ctq_indb")
    ctq.__file__ = "ctq_indb.py"
    linecache.cache["ctq_indb.py"] = (len(_src[0]["source"]), None, _src[0]["source"].splitlines(True), "ctq_indb.py")
    exec(compile(_src[0]["source"], "ctq_indb.py", "exec"), ctq.__dict__)
    ctq.SOURCE_SHA = _src[0]["sha"]
    GD["ctq.indb"] = ctq
