from bigquant.kmeans import KMeans
