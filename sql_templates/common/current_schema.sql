-- Where an unqualified --out table goes.
SELECT current_schema()
