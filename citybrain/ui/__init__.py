"""The operations view: the city, the hotline, the data base and its security in a browser (`citybrain ui`)."""
