# Prepended to every ctq PL/Python function: load ctq's server modules (ctq/rules.py, then
# ctq/indb.py, which imports it as ctq_rules) from ctq.server_code into GD once per backend (and
# again after `ctq install` ships a new version: the sha below changes).
ctq = GD.get("ctq.indb")
if ctq is None or ctq.SOURCE_SHA != "{{indb_sha}}":
    import sys, types, linecache
    for _row in reversed(plpy.execute("SELECT jsonb_array_elements_text(value) AS p FROM ctq.meta WHERE key = 'python_path'")):
        if _row["p"] not in sys.path:
            sys.path.insert(0, _row["p"])
    _src = {_row["name"]: _row for _row in plpy.execute("SELECT name, sha, source FROM ctq.server_code")}
    if sorted(_src) != sorted({{server_modules}}) or len({_row["sha"] for _row in _src.values()}) != 1:
        plpy.error("ctq server code is missing or incomplete: run `ctq install`")
    for _name in {{server_modules}}:
        ctq = types.ModuleType(f"ctq_{_name}")
        ctq.__file__ = f"ctq_{_name}.py"
        linecache.cache[ctq.__file__] = (len(_src[_name]["source"]), None, _src[_name]["source"].splitlines(True), ctq.__file__)
        sys.modules[ctq.__name__] = ctq
        exec(compile(_src[_name]["source"], ctq.__file__, "exec"), ctq.__dict__)
    ctq.SOURCE_SHA = _src["indb"]["sha"]
    GD["ctq.indb"] = ctq
