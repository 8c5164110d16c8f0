"""The Airflow side: assets, DAG tasks, the Airflow API client, the asset-event bridge, the local and live Airflow."""
