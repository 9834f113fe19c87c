"""Bottom, interactive and top networks. Plain PyTorch: nothing here knows about encryption."""
