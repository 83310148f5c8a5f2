-- Read as the exporting session does (the name is the server's: hex digits and dashes).
SET TRANSACTION SNAPSHOT '{{snapshot}}'
