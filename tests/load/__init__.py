"""Many viewers of the dashboard at once, through Streamlit's own websocket protocol."""
