"""Getting the data: fetch (Kaggle, Google Drive, URL, local copy) and the synthetic demo set."""
