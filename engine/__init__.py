"""SplitLab's engine: the parallel split-learning simulator. Never imports Streamlit or storage."""
