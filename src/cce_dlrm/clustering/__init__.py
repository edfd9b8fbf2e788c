"""FAISS k-means and nearest-centroid assignment, shared by the methods that cluster (cce, pq)."""

from cce_dlrm.clustering.agreement import adjusted_rand_index, share_moved
from cce_dlrm.clustering.kmeans import (CentroidIndex, KMeansResult, faiss_gpu_device, train_kmeans,
                                        use_two_level)

__all__ = ["CentroidIndex", "KMeansResult", "adjusted_rand_index", "faiss_gpu_device", "share_moved",
           "train_kmeans", "use_two_level"]
