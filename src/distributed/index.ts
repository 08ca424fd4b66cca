// Data-parallel training over Open MPI: the binding, and DistributedDataParallel's shape for our models.
export { DataParallel, startDataParallel, type CommStats, type DataParallelOptions, type StartPosition } from './ddp.js';
export { Mpi, collectiveTimeoutSeconds, distributedAvailability, launchedWorldSize, localWorldSize } from './mpi.js';
